"""Preflight: before a run asks for GPUs, check against the Kubernetes API that nothing it needs would leave a pod
Pending for ever or fail every step, and refuse (exit 2, nothing submitted, no GPU pod) with a message naming the fix.

Checks (each where the caller may read it; a check it may not read is reported as not checked, never guessed):

* GPU nodes: for every GPU class a model of the run is placed in, a schedulable node whose labels satisfy the class's
  node selector and required node affinity (GFD's ``nvidia.com/gpu.memory`` / ``nvidia.com/gpu.compute.major``, GKE's
  ``cloud.google.com/gke-accelerator``, or the registry's ``node_selector``), whose taints the pod tolerates and which
  has the class's GPUs allocatable;
* the weight-cache PVC exists and is Bound (or waits for its first consumer, by its storage class);
* the artifact repository and store ConfigMaps and the Secrets the run needs exist, with their keys;
* SelfSubjectAccessReviews: the identity that submits may create workflows from the template (``submit``, asked with
  the Argo token), the workflow's ServiceAccount may write the task results Argo's executor reports outputs with (the
  plan step, asked as itself).

``submit`` runs it with your kubeconfig (``--no-preflight`` skips it, and the plan step's); the plan step runs it with
the workflow's ServiceAccount before any GPU pod. GPU nodes that are created on demand (autoscaling from zero) do not
exist yet: pass ``--no-preflight``; the Pending deadline of every GPU step still bounds the wait.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Literal, Optional

from pipeline.cluster.kube_api import KubeApi, KubeUnreachable
from pipeline.cluster.placement import parse_classes, place
from steps.errors import ConfigError

GPU_RESOURCE = "nvidia.com/gpu"
NO_PREFLIGHT = ("if that is intended (e.g. GPU nodes that autoscale from zero, a PVC bound on first use), pass --no-preflight "
                "(-p preflight=false in the Argo UI)")


class PreflightRefused(ConfigError):
    """The cluster cannot run this workflow as configured (exit 2): nothing was submitted, no GPU pod was started."""


@dataclass(frozen=True)
class Finding:
    """One check's result: ``ok``, ``refused`` (the run would hang or fail: its message names the fix) or ``unchecked``."""

    check: str
    outcome: Literal["ok", "refused", "unchecked"]
    message: str


@dataclass(frozen=True)
class Scheduling:
    """Where the pods of one GPU class may run: the serve template's node selector, node affinity, tolerations and GPUs."""

    name: str
    gpus: int
    node_selector: dict = field(default_factory=dict)
    affinity: dict = field(default_factory=dict)
    tolerations: tuple = ()

    @classmethod
    def of_template(cls, name: str, template: dict) -> "Scheduling":
        """The scheduling of a rendered serve template (its vLLM sidecar holds the GPUs)."""
        gpus = max((int(s.get("resources", {}).get("limits", {}).get(GPU_RESOURCE, 0)) for s in template.get("sidecars", [])), default=0)
        return cls(name, gpus, dict(template.get("nodeSelector") or {}), dict(template.get("affinity") or {}),
                   tuple(template.get("tolerations") or ()))

    def terms(self) -> list[dict]:
        """The required node affinity's terms (any one must match)."""
        required = (self.affinity.get("nodeAffinity") or {}).get("requiredDuringSchedulingIgnoredDuringExecution") or {}
        return list(required.get("nodeSelectorTerms") or [])

    def describe(self) -> str:
        """What a node needs, in words."""
        parts = [f"{self.gpus} allocatable {GPU_RESOURCE}"]
        if self.node_selector:
            parts.append("labels " + ", ".join(f"{k}={v}" for k, v in self.node_selector.items()))
        alternatives = [" and ".join(_expression_text(e) for e in t.get("matchExpressions", [])) for t in self.terms()]
        if alternatives:
            parts.append("labels " + " OR ".join(f"({a})" for a in alternatives if a))
        return "; ".join(parts)


def _expression_text(expression: dict) -> str:
    values = expression.get("values") or []
    operator = expression["operator"]
    if operator in ("Gt", "Lt"):
        return f"{expression['key']} {'>' if operator == 'Gt' else '<'} {values[0]}"
    if operator in ("Exists", "DoesNotExist"):
        return f"{expression['key']} {operator.lower()}"
    return f"{expression['key']} {'in' if operator == 'In' else 'not in'} [{', '.join(values)}]"


def _expression_matches(labels: dict[str, str], expression: dict) -> bool:
    """One nodeSelectorRequirement against a node's labels, as the scheduler evaluates it."""
    key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
    if operator == "Exists":
        return key in labels
    if operator == "DoesNotExist":
        return key not in labels
    if operator == "In":
        return labels.get(key) in values
    if operator == "NotIn":
        return labels.get(key) not in values
    if operator in ("Gt", "Lt"):
        try:
            have, bound = int(labels[key]), int(values[0])
        except (KeyError, ValueError, IndexError):
            return False
        return have > bound if operator == "Gt" else have < bound
    return False


def _tolerated(taint: dict, tolerations: Iterable[dict]) -> bool:
    for toleration in tolerations:
        if toleration.get("effect") and toleration["effect"] != taint.get("effect"):
            continue
        if toleration.get("operator") == "Exists" and (not toleration.get("key") or toleration["key"] == taint.get("key")):
            return True
        if toleration.get("key") == taint.get("key") and toleration.get("value", "") == taint.get("value", ""):
            return True
    return False


def node_fits(node: dict, scheduling: Scheduling) -> Optional[str]:
    """None when a pod of ``scheduling`` can be placed on ``node``; else why not."""
    labels = (node.get("metadata") or {}).get("labels") or {}
    spec = node.get("spec") or {}
    if spec.get("unschedulable"):
        return "cordoned"
    missing = [f"{k}={v}" for k, v in scheduling.node_selector.items() if labels.get(k) != v]
    if missing:
        return "lacks " + ", ".join(missing)
    terms = scheduling.terms()
    if terms and not any(all(_expression_matches(labels, e) for e in t.get("matchExpressions", [])) for t in terms):
        return "labels do not satisfy the GPU class's node affinity"
    taints = [t for t in spec.get("taints") or [] if t.get("effect") in ("NoSchedule", "NoExecute")]
    untolerated = [t["key"] for t in taints if not _tolerated(t, scheduling.tolerations)]
    if untolerated:
        return f"taint(s) {', '.join(untolerated)} not tolerated"
    try:
        gpus = int(((node.get("status") or {}).get("allocatable") or {}).get(GPU_RESOURCE, 0))
    except ValueError:
        gpus = 0
    if gpus < scheduling.gpus:
        return f"{gpus} allocatable {GPU_RESOURCE}, needs {scheduling.gpus}"
    return None


def _node_text(node: dict) -> str:
    labels = (node.get("metadata") or {}).get("labels") or {}
    shown = {k: v for k, v in labels.items() if k.startswith(("nvidia.com/gpu.memory", "nvidia.com/gpu.compute.major",
                                                               "nvidia.com/gpu.product", "cloud.google.com/gke-accelerator"))}
    gpus = ((node.get("status") or {}).get("allocatable") or {}).get(GPU_RESOURCE, "0")
    return f"{node['metadata']['name']} ({gpus} GPU{', ' if shown else ''}{', '.join(f'{k}={v}' for k, v in sorted(shown.items()))})"


def _get(api: KubeApi, path: str, what: str) -> tuple[Optional[dict], Optional[Finding]]:
    """(object, None), (None, None) when it does not exist, or (None, an unchecked Finding) when it cannot be read."""
    try:
        code, body = api.get(path)
    except KubeUnreachable as exc:
        return None, Finding(what, "unchecked", str(exc))
    if code == 200:
        return body, None
    if code == 404 and body.get("reason") == "NotFound":
        return None, None
    reason = "forbidden" if code == 403 else "not authorized" if code == 401 else f"HTTP {code}"
    return None, Finding(what, "unchecked", f"{what}: not checked ({reason} for {api.where})")


def unreachable(api: KubeApi) -> list[Finding]:
    """[] when the API server answers; else the one finding that nothing could be checked (instead of a timeout per check)."""
    try:
        api.get("/version")
    except KubeUnreachable as exc:
        return [Finding("Kubernetes API", "unchecked", f"nothing checked: {exc}")]
    return []


def check_gpu_nodes(api: KubeApi, needs: dict[str, tuple[Scheduling, list[str]]], fix: str) -> list[Finding]:
    """One finding per GPU class in ``needs`` (class -> (its scheduling, the run's models placed in it))."""
    if not needs:
        return []
    nodes, problem = _get(api, "/api/v1/nodes", "GPU nodes")
    if problem or nodes is None:
        return [problem or Finding("GPU nodes", "unchecked", "GPU nodes: the node list was not found")]
    items = nodes.get("items") or []
    gpu_nodes = [n for n in items if ((n.get("status") or {}).get("allocatable") or {}).get(GPU_RESOURCE, "0") not in ("0", "")]
    findings = []
    for name, (scheduling, models) in needs.items():
        fitting = [n["metadata"]["name"] for n in items if node_fits(n, scheduling) is None]
        if fitting:
            shown = ", ".join(fitting[:5])
            findings.append(Finding(f"GPU nodes for {name}", "ok", f"GPU class {name}: {len(fitting)} node(s) fit ({shown})"))
            continue
        seen = "; ".join(f"{_node_text(n)}: {node_fits(n, scheduling)}" for n in gpu_nodes[:8]) or "none has an allocatable GPU"
        findings.append(Finding(f"GPU nodes for {name}", "refused",
                                f"no schedulable node fits GPU class {name} ({scheduling.describe()}), needed by "
                                f"{', '.join(models)}: its pods would stay Pending. GPU nodes: {seen}. Fix: {fix}"))
    return findings


def check_model_cache(api: KubeApi, namespace: str, claim: str) -> Finding:
    """The weight-cache PVC exists and is Bound (or waits for its first consumer)."""
    what = f"PVC {claim}"
    found, problem = _get(api, f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/{claim}", what)
    if problem:
        return problem
    if found is None:
        return Finding(what, "refused", f"the weight-cache PVC {claim} does not exist in namespace {namespace}, so every GPU step would "
                       "stay Pending. Fix: helm upgrade with --set modelCache.create=true (the chart creates it), or create a "
                       f"ReadWriteMany PVC named {claim} yourself")
    phase = (found.get("status") or {}).get("phase")
    if phase == "Bound":
        return Finding(what, "ok", f"PVC {claim} is Bound")
    storage_class = (found.get("spec") or {}).get("storageClassName") or ""
    if storage_class:
        sc, _ = _get(api, f"/apis/storage.k8s.io/v1/storageclasses/{storage_class}", f"StorageClass {storage_class}")
        if sc is not None and sc.get("volumeBindingMode") == "WaitForFirstConsumer":
            return Finding(what, "ok", f"PVC {claim} is {phase}: its StorageClass {storage_class} binds it when the first GPU pod uses it")
    modes = ", ".join((found.get("spec") or {}).get("accessModes") or [])
    return Finding(what, "refused", f"the weight-cache PVC {claim} is {phase or 'not Bound'} (storage class "
                   f"{storage_class or 'the cluster default'}, access {modes}): every GPU step would stay Pending. The chart "
                   "asks ReadWriteMany, which many default classes lack. Fix: set an RWX class: helm upgrade ... --set "
                   "modelCache.storageClassName=<an RWX class: NFS, CephFS, EFS, Filestore, Azure Files> after deleting the Pending "
                   f"PVC (kubectl -n {namespace} delete pvc {claim}), or give your own Bound PVC of that name with "
                   f"--set modelCache.create=false; {NO_PREFLIGHT}")


def check_config_maps(api: KubeApi, namespace: str, wanted: dict[str, tuple[str, str]]) -> list[Finding]:
    """``wanted``: ConfigMap name -> (key it must have, or ''; its role). Missing ones are refused."""
    findings = []
    for name, (key, role) in wanted.items():
        what = f"ConfigMap {name}"
        found, problem = _get(api, f"/api/v1/namespaces/{namespace}/configmaps/{name}", what)
        if problem:
            findings.append(problem)
        elif found is None or (key and key not in (found.get("data") or {})):
            lack = "does not exist" if found is None else f"has no key {key!r}"
            findings.append(Finding(what, "refused", f"ConfigMap {name} ({role}) {lack} in namespace {namespace}. Fix: install the "
                                    f"chart there: helm install grace charts/grace-pipeline -n {namespace} --set s3.bucket=<bucket> ..."))
        else:
            findings.append(Finding(what, "ok", f"ConfigMap {name} exists"))
    return findings


def check_secrets(api: KubeApi, namespace: str, wanted: dict[str, tuple[tuple[str, ...], str]]) -> list[Finding]:
    """``wanted``: Secret name -> (keys it must have, why the run needs it). Values are never read out or shown."""
    findings = []
    for name, (keys, why) in wanted.items():
        what = f"Secret {name}"
        found, problem = _get(api, f"/api/v1/namespaces/{namespace}/secrets/{name}", what)
        if problem:
            findings.append(problem)
            continue
        missing = list(keys) if found is None else [k for k in keys if k not in (found.get("data") or {})]
        found = None  # drop the values at once
        if missing:
            literal = " ".join(f"--from-literal={k}=<...>" for k in keys)
            state = "does not exist" if len(missing) == len(keys) else f"has no key(s) {', '.join(missing)}"
            findings.append(Finding(what, "refused", f"Secret {name} ({why}) {state} in namespace {namespace}. Fix: "
                                    f"kubectl -n {namespace} create secret generic {name} {literal}"))
        else:
            findings.append(Finding(what, "ok", f"Secret {name} has {', '.join(keys)}"))
    return findings


def check_access(api: KubeApi, namespace: str, needs: list[tuple[str, str, str, str]], fix: str) -> list[Finding]:
    """SelfSubjectAccessReviews for ``needs`` (verb, API group, resource, why), as ``api``'s identity."""
    findings = []
    for verb, group, resource, why in needs:
        what = f"may {verb} {resource}{'.' + group if group else ''}"
        try:
            code, allowed = api.may(verb, resource, namespace, group)
        except KubeUnreachable as exc:
            findings.append(Finding(what, "unchecked", str(exc)))
            continue
        if allowed is None:
            reason = "the API server did not accept the token" if code == 401 else f"HTTP {code}"
            findings.append(Finding(what, "unchecked", f"{what}: not checked ({reason}; {api.where})"))
        elif allowed:
            findings.append(Finding(what, "ok", f"{api.where} {what}"))
        else:
            findings.append(Finding(what, "refused", f"{api.where} may not {verb} {resource}{'.' + group if group else ''} in namespace "
                                    f"{namespace} ({why}): forbidden. Fix: {fix}"))
    return findings


def conclude(findings: list[Finding], say: Callable[[str], None] = print) -> None:
    """Print what could not be checked; raise PreflightRefused listing every refusal with its fix."""
    for finding in findings:
        if finding.outcome == "unchecked":
            say(f"preflight: {finding.message}")
    refused = [f.message for f in findings if f.outcome == "refused"]
    if refused:
        raise PreflightRefused(f"preflight: the cluster cannot run this as configured ({len(refused)} problem(s)); nothing was "
                               "started:\n  - " + "\n  - ".join(refused))
    checked = sum(f.outcome == "ok" for f in findings)
    say(f"preflight: {checked} check(s) passed" + (f", {len(findings) - checked} not checked" if checked < len(findings) else ""))


NODE_FIX = ("label the GPU nodes: NVIDIA GPU Feature Discovery (part of the GPU Operator) sets nvidia.com/gpu.memory and "
            "nvidia.com/gpu.compute.major, GKE sets cloud.google.com/gke-accelerator; or give these models a node_selector with your "
            "GPU nodes' labels in a registry and install the template rendered from it (grace-pipeline render --registry FILE "
            f"--chart charts/grace-pipeline, then helm upgrade); {NO_PREFLIGHT}")
WORKFLOW_RBAC_FIX = ("install the chart's RBAC for the workflow's ServiceAccount (helm upgrade grace charts/grace-pipeline ...; "
                     "templates/rbac.yaml)")


def class_scheduling(gpu) -> Scheduling:
    """The scheduling of a :class:`pipeline.cluster.placement.GpuClass`, as its serve template is rendered."""
    placed = gpu.scheduling()
    return Scheduling(gpu.name, gpu.gpus, placed["nodeSelector"], placed["affinity"], tuple(placed["tolerations"]))


def plan_checks(api: KubeApi, namespace: str, needs: dict[str, tuple[Scheduling, list[str]]], model_cache: str) -> list[Finding]:
    """The plan step's preflight, as the workflow's ServiceAccount: nodes for the GPU classes in use and the weight cache (when
    a GPU step will run), and the task results Argo's executor writes for every step."""
    if down := unreachable(api):
        return down
    findings = check_gpu_nodes(api, needs, NODE_FIX)
    if needs:
        findings.append(check_model_cache(api, namespace, model_cache))
    return findings + check_access(api, namespace, [
        ("create", "argoproj.io", "workflowtaskresults", "Argo's executor reports every step's outputs with them"),
        ("patch", "argoproj.io", "workflowtaskresults", "Argo's executor reports every step's outputs with them")], WORKFLOW_RBAC_FIX)


SUBMITTER_FIX = ("submit with the chart's submitter account: export ARGO_TOKEN=\"$(kubectl -n {ns} create token grace-submitter)\" "
                 "(chart value submitter.create=true), or bind your account to a Role that may do this")


def template_classes(template: dict) -> tuple[list, dict[str, Scheduling]]:
    """(the GPU classes the installed template's plan step places models in, class name -> its serve template's scheduling)."""
    templates = {t["name"]: t for t in (template.get("spec") or {}).get("templates", [])}
    args = ((templates.get("plan") or {}).get("container") or {}).get("args", [])
    given = [a.split("=", 1)[1] for a in args if a.startswith("--gpu-classes=")]
    classes = parse_classes(given[0]) if given else []
    return classes, {c.name: Scheduling.of_template(c.name, templates[f"serve-{c.name}"]) for c in classes
                     if f"serve-{c.name}" in templates}


def submit_checks(api: KubeApi, namespace: str, template_name: str, gpu_models: Optional[dict],
                  secrets: dict[str, tuple[tuple[str, ...], str]], config_maps: dict[str, tuple[str, str]], model_cache: str,
                  argo_api: Optional[KubeApi]) -> list[Finding]:
    """``submit``'s preflight with the caller's kubeconfig: the installed template and its GPU classes, nodes for the classes
    ``gpu_models`` (name -> ModelSpec; None: the run's registry could not be read here) are placed in, the weight cache, the
    ConfigMaps and ``secrets`` (name -> (keys, why)); and, as ``argo_api`` (the Argo token's identity), that it may submit."""
    if down := unreachable(api):
        return down
    findings: list[Finding] = []
    what = f"WorkflowTemplate {template_name}"
    template, problem = _get(api, f"/apis/argoproj.io/v1alpha1/namespaces/{namespace}/workflowtemplates/{template_name}", what)
    if problem:
        findings.append(problem)
    elif template is None:
        findings.append(Finding(what, "refused", f"WorkflowTemplate {template_name} is not installed in namespace {namespace}. Fix: "
                                f"helm install grace charts/grace-pipeline -n {namespace} --set s3.bucket=<bucket> ..."))
    if template is not None and gpu_models:
        classes, scheduling = template_classes(template)
        needs: dict[str, tuple[Scheduling, list[str]]] = {}
        for name, model in gpu_models.items():
            try:
                gpu = place(model, classes)
            except ConfigError as exc:
                findings.append(Finding(f"GPU class of {name}", "refused", str(exc)))
                continue
            if gpu.name in scheduling:
                needs.setdefault(gpu.name, (scheduling[gpu.name], []))[1].append(name)
        findings += check_gpu_nodes(api, needs, NODE_FIX)
    elif gpu_models is None:
        findings.append(Finding("GPU nodes", "unchecked", "GPU nodes: not checked (the run's registry cannot be read here)"))
    if gpu_models or gpu_models is None:
        findings.append(check_model_cache(api, namespace, model_cache))
    findings += check_config_maps(api, namespace, config_maps)
    findings += check_secrets(api, namespace, secrets)
    if argo_api is None:
        findings.append(Finding("may submit", "unchecked", "may submit: not checked (no Argo token: the Argo server submits with "
                                "its own account)"))
    else:
        findings += check_access(argo_api, namespace, [
            ("create", "argoproj.io", "workflows", "submitting a run"),
            ("get", "argoproj.io", "workflowtemplates", "submitting from the template")], SUBMITTER_FIX.format(ns=namespace))
    return findings
