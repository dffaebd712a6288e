"""An offline checker of Kubernetes Pod Security Standards, ``baseline`` and ``restricted`` (the rules of
https://kubernetes.io/docs/concepts/security/pod-security-standards/, as the API server's PodSecurity admission applies
them at ``restricted:latest``), for the pods an Argo WorkflowTemplate creates.

A pod of a template is: the workflow's (or the template's own) pod ``securityContext``, the template's volumes and the
workflow's, its main ``container`` and its ``sidecars`` / ``initContainers``. Argo adds its own ``init`` and ``wait``
containers; their securityContext comes from the controller's configuration (``executor.securityContext``), not from the
template, so they are outside what a template can be checked for (README: what the operator sets).
"""

from __future__ import annotations

from typing import Any, Iterator

# baseline: capabilities a container may add; restricted: only NET_BIND_SERVICE
BASELINE_CAPABILITIES = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE", "SETFCAP",
                         "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
RESTRICTED_VOLUME_TYPES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}
VOLUME_SOURCE_KEYS = {"name"}  # everything else in a volume is its type
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
                "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports", "net.ipv4.tcp_keepalive_time",
                "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes"}


def template_pods(workflow: dict) -> Iterator[tuple[str, dict]]:
    """(template name, pod spec) for every template of a rendered Workflow/WorkflowTemplate that runs a pod."""
    spec = workflow["spec"]
    for template in spec["templates"]:
        if "container" not in template and "script" not in template:
            continue
        main = dict(template.get("container") or template.get("script"), name="main")
        pod = {"securityContext": template.get("securityContext", spec.get("securityContext", {})),
               "volumes": [*spec.get("volumes", []), *template.get("volumes", [])],
               "containers": [main, *template.get("sidecars", [])], "initContainers": template.get("initContainers", []),
               **{k: template[k] for k in ("hostNetwork", "hostPID", "hostIPC") if k in template}}
        yield template["name"], pod


def _containers(pod: dict) -> list[dict]:
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


def _effective(pod: dict, container: dict, field: str) -> Any:
    """A securityContext field as the kubelet applies it: the container's, else the pod's."""
    own = (container.get("securityContext") or {}).get(field)
    return own if own is not None else (pod.get("securityContext") or {}).get(field)


def baseline_problems(pod: dict) -> list[str]:
    """Violations of the ``baseline`` profile."""
    problems = [f"{key} is true" for key in ("hostNetwork", "hostPID", "hostIPC") if pod.get(key)]
    pod_sc = pod.get("securityContext") or {}
    for volume in pod.get("volumes", []):
        if "hostPath" in volume:
            problems.append(f"volume {volume['name']}: hostPath")
    for sysctl in pod_sc.get("sysctls", []):
        if sysctl["name"] not in SAFE_SYSCTLS:
            problems.append(f"sysctl {sysctl['name']} is not safe")
    if (pod_sc.get("seccompProfile") or {}).get("type") == "Unconfined":
        problems.append("pod seccompProfile is Unconfined")
    for container in _containers(pod):
        name, sc = container["name"], container.get("securityContext") or {}
        if sc.get("privileged"):
            problems.append(f"container {name}: privileged")
        added = set((sc.get("capabilities") or {}).get("add", [])) - BASELINE_CAPABILITIES
        if added:
            problems.append(f"container {name}: adds capabilities {sorted(added)}")
        if any(port.get("hostPort") for port in container.get("ports", [])):
            problems.append(f"container {name}: hostPort")
        if (sc.get("seccompProfile") or {}).get("type") == "Unconfined":
            problems.append(f"container {name}: seccompProfile Unconfined")
        if sc.get("procMount") not in (None, "Default"):
            problems.append(f"container {name}: procMount {sc['procMount']}")
    return problems


def restricted_problems(pod: dict) -> list[str]:
    """Violations of the ``restricted`` profile (which includes ``baseline``)."""
    problems = baseline_problems(pod)
    for volume in pod.get("volumes", []):
        kinds = set(volume) - VOLUME_SOURCE_KEYS
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            problems.append(f"volume {volume['name']}: type {sorted(kinds - RESTRICTED_VOLUME_TYPES)} is not allowed")
    pod_sc = pod.get("securityContext") or {}
    if pod_sc.get("runAsUser") == 0:
        problems.append("pod runAsUser is 0 (root)")
    for container in _containers(pod):
        name, sc = container["name"], container.get("securityContext") or {}
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"container {name}: allowPrivilegeEscalation must be false")
        if _effective(pod, container, "runAsNonRoot") is not True:
            problems.append(f"container {name}: runAsNonRoot must be true (container or pod)")
        if sc.get("runAsUser") == 0:
            problems.append(f"container {name}: runAsUser is 0 (root)")
        seccomp = (_effective(pod, container, "seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"container {name}: seccompProfile must be RuntimeDefault or Localhost (container or pod), is {seccomp}")
        capabilities = sc.get("capabilities") or {}
        if "ALL" not in capabilities.get("drop", []):
            problems.append(f"container {name}: capabilities must drop ALL")
        if set(capabilities.get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"container {name}: may add only NET_BIND_SERVICE")
    return problems


def workflow_problems(workflow: dict) -> dict[str, list[str]]:
    """Template name -> its pod's ``restricted`` violations (templates without any are left out)."""
    return {name: found for name, pod in template_pods(workflow) if (found := restricted_problems(pod))}
