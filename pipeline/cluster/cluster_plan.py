"""The cluster workflow's first step: validate the inputs, fix the run id, route each model, print the cost.

It runs in the steps image (``grace-pipeline cluster-plan``) before any GPU is requested,
so a bad study file or a gated model the HF token cannot download fails the workflow in
seconds (exit 2, not retried). Items are plain model names, so Argo's node names read
``gpu1-22g(0:llama-3.1-8b-instruct)``. It writes, into ``out``, the files the
WorkflowTemplate reads as output parameters:

- ``run-id``: the given run id, or the one derived from inputs, prompts and sampling
  (the same as a local run's, so re-submitting the same inputs resumes);
- ``<gpu class>.json`` for every GPU class of the WorkflowTemplate (``--gpu-classes``): the models
  whose served stages still have work, served by a vLLM sidecar of that class. Models come from the run's
  registry (``--registry``: new models and overridden fields alike) and are placed in the least
  demanding class that fits them (:func:`pipeline.cluster.placement.place`), or refused (exit 2) naming
  the class the template lacks;
- ``endpoint.json``: models served by an existing endpoint (or the embedded CPU model);
- ``extract-only.json``: models whose served tables are complete but not their extraction
  (no model server is started for them);
- ``<gpu class>-timeout``: the deadline of that class's GPU steps (Argo template ``timeout``, e.g. ``5400s``): the
  pending allowance plus a bound on the run of its slowest model (:func:`pipeline.cluster.cost.step_deadline_s`);
- ``study-items.json``: the studies; ``models``: the comma-separated model list.

Before any GPU pod, the preflight checks the cluster as the workflow's ServiceAccount (nodes for each GPU class in
use, the weight-cache PVC, its own permissions; :mod:`pipeline.cluster.preflight`) and refuses with exit 2 naming
the fix; ``--preflight false`` skips it.

A (model, study) item whose tables are complete in the run's store (every row, none
failed) costs nothing on a re-submit: a model with nothing left is in no list. The run's
manifest goes to the durable (checkpoint) store; the cost model goes to the log.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import httpx

from pipeline.cluster.cost import DEFAULT_PENDING_MINUTES, estimate, format_costs, step_deadline_s
from pipeline.cluster.hub_access import check_hub_access
from pipeline.cluster.kube_api import KubeApi, from_environment
from pipeline.cluster.names import HF_SECRET, MODEL_CACHE_PVC
from pipeline.cluster.placement import GpuClass, gpu_classes, place
from pipeline.cluster.preflight import class_scheduling, conclude, plan_checks
from pipeline.config import RunConfig, checkpoint_store
from pipeline.layout import stage_keys
from pipeline.manifest import write_manifest
from pipeline.plan import SERVED_STAGES
from pipeline.registry import load_registry
from pipeline.run_setup import load_run_inputs, resolve_models, run_id_for
from schemas.settings import ModelSpec
from steps.store import Store
from steps.tables import read_table

FAILED_COLUMN = {"query": "status", "probabilities": "status", "extract": "extraction_status"}


def stage_complete(store: Store, stem: str, stage: str, expected_rows: int) -> bool:
    """Whether ``stem`` holds exactly the expected rows and none of them failed (another limit: not complete)."""
    table = read_table(store, stem)
    if table is None or len(table) != expected_rows:
        return False
    column = FAILED_COLUMN[stage]
    return column not in table or not (table[column] == "failed").any()


def remaining_stages(store: Store, model: ModelSpec, inputs: dict, config: RunConfig) -> dict[int, set[str]]:
    """Study -> the stages of ``model`` whose tables are not complete in ``store`` (the run's folder)."""
    left: dict[int, set[str]] = {}
    for number, (spec, table) in inputs.items():
        rows = len(table.frame)
        expected = {"query": rows * config.replications, "extract": rows * config.replications, "probabilities": rows}
        stages = {stage for stage in expected
                  if not stage_complete(store, stage_keys(stage, spec, model, config.scoring).stem, stage, expected[stage])}
        if stages:
            left[number] = stages
    return left


def preflight(kube: Optional[KubeApi], classes: dict[str, list[str]], template_classes: list[GpuClass]) -> None:
    """The plan step's preflight (module docstring); PreflightRefused (exit 2) before any GPU pod."""
    if kube is None:
        print("preflight: no Kubernetes credentials here (not in a pod, no kubeconfig): skipped", flush=True)
        return
    by_name = {c.name: c for c in template_classes}
    needs = {name: (class_scheduling(by_name[name]), models) for name, models in classes.items() if models}
    conclude(plan_checks(kube, kube.namespace or "default", needs, MODEL_CACHE_PVC), lambda text: print(text, flush=True))


def cluster_plan(config: RunConfig, out: Path, http: Optional[httpx.Client] = None,
                 template_classes: Optional[list[GpuClass]] = None, check_cluster: bool = False, kube: Optional[KubeApi] = None,
                 pending_minutes: float = DEFAULT_PENDING_MINUTES, workflow: Optional[str] = None) -> dict[str, object]:
    """Write the plan files into ``out`` (see the module docstring) and return their contents.

    ``template_classes``: the GPU classes the WorkflowTemplate has (default: those it is rendered with from the
    shipped registry). ``check_cluster``: run the preflight, with ``kube`` (default: this pod's ServiceAccount or the
    kubeconfig). ``workflow``: the Argo workflow's name, recorded in the manifest (its logs are archived under it)."""
    inputs, human = load_run_inputs(config)
    models = resolve_models(config, require_endpoints=False)
    template_classes = gpu_classes(load_registry().values()) if template_classes is None else template_classes
    on_gpus = {name: place(model, template_classes) for name, model in models.items()
               if model.engine == "vllm" and model.gpus > 0 and not config.endpoints.get(name)}  # exit 2 before anything else
    run_id = run_id_for(config, inputs)
    durable = checkpoint_store(config, run_id)
    durable.check()
    classes: dict[str, list[str]] = {c.name: [] for c in template_classes}
    endpoint: list[str] = []
    extract_only: list[str] = []
    skipped: list[str] = []
    for name, model in models.items():
        left = remaining_stages(durable, model, inputs, config)
        if not left:
            skipped.append(name)
        elif not any(set(SERVED_STAGES) & stages for stages in left.values()):
            extract_only.append(name)
        elif name in on_gpus:
            classes[on_gpus[name].name].append(name)
        else:
            endpoint.append(name)
    sidecar_models = [models[n] for names in classes.values() for n in names]
    with (http or httpx.Client()) as client:
        for warning in check_hub_access(sidecar_models, HF_SECRET[0], client):
            print(f"warning: {warning}", flush=True)
    if check_cluster:
        preflight(kube or from_environment(), classes, template_classes)
    rows = {n: len(table.frame) for n, (_, table) in inputs.items()}
    deadlines = {name: max((step_deadline_s(models[m], rows, config.replications, pending_minutes) for m in names),
                           default=int(pending_minutes * 60 + 3600)) for name, names in classes.items()}
    plan: dict[str, object] = {"run-id": run_id, **{f"{name}.json": names for name, names in classes.items()},
                               **{f"{name}-timeout": f"{seconds}s" for name, seconds in deadlines.items()}, "endpoint.json": endpoint,
                               "extract-only.json": extract_only, "study-items.json": [str(n) for n in sorted(inputs)],
                               "models": ",".join(models)}
    out.mkdir(parents=True, exist_ok=True)
    for name, value in plan.items():
        (out / name).write_text(value if isinstance(value, str) else json.dumps(value))
    print(format_costs([estimate(m, rows, config.replications) for m in sidecar_models],
                       f"Cost model of run {run_id} (pipeline/models.yaml; a cold weight cache downloads each model once):"), flush=True)
    if skipped:
        print(f"complete, nothing to do: {', '.join(skipped)}", flush=True)
    write_manifest(durable, "manifest.json", config, run_id, inputs, models, {"cluster": {
        "gpu_classes": {k: v for k, v in classes.items() if v}, "endpoint": endpoint, "extract_only": extract_only,
        "complete": skipped, "workflow": workflow, "gpu_step_deadlines_s": {k: v for k, v in deadlines.items() if classes[k]}}}, human)
    return plan
