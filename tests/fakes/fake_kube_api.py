"""FAKE Kubernetes API server for the preflight tests: answers GETs from recorded Kubernetes API objects (the shapes a
real API server returns: NodeList, PersistentVolumeClaim, StorageClass, ConfigMap, Secret, WorkflowTemplate, and
``Status`` objects for 403/404) and SelfSubjectAccessReviews from a table of what the caller may do.

Not a Kubernetes API server: no watch, no auth beyond recording the bearer token of each request, no field selectors.
``kubeconfig(path)`` writes a kubeconfig pointing at it (token auth), as ``kubectl`` would use it.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional

import yaml

NAMESPACE = "grace"


def status(code: int, message: str) -> tuple[int, dict]:
    """A Kubernetes ``Status`` failure answer, as the API server sends it with a 4xx code."""
    reason = {403: "Forbidden", 404: "NotFound", 401: "Unauthorized"}.get(code, "BadRequest")
    return code, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason,
                  "code": code}


def node(name: str, labels: dict[str, str], gpus: int = 1, taints: Optional[list] = None, unschedulable: bool = False) -> dict:
    """A Node as the API server lists it (labels, allocatable GPUs, taints)."""
    return {"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **labels}},
            "spec": {**({"taints": taints} if taints else {}), **({"unschedulable": True} if unschedulable else {})},
            "status": {"allocatable": {"cpu": "32", "memory": "256Gi", **({"nvidia.com/gpu": str(gpus)} if gpus else {})}}}


def gfd_node(name: str, memory_mib: int, compute_major: int, gpus: int = 1) -> dict:
    """A node labelled by NVIDIA GPU Feature Discovery (GPU Operator)."""
    return node(name, {"nvidia.com/gpu.present": "true", "nvidia.com/gpu.memory": str(memory_mib),
                       "nvidia.com/gpu.compute.major": str(compute_major), "nvidia.com/gpu.product": "NVIDIA-FAKE"}, gpus,
                taints=[{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}])


def gke_node(name: str, accelerator: str, gpus: int = 1) -> dict:
    """A GKE node with GPUs (the default device plugin: no GFD labels)."""
    return node(name, {"cloud.google.com/gke-accelerator": accelerator, "cloud.google.com/gke-nodepool": "gpu-pool"}, gpus,
                taints=[{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}])


def pvc(name: str, phase: str, storage_class: str = "nfs-client", modes: tuple[str, ...] = ("ReadWriteMany",)) -> dict:
    """A PersistentVolumeClaim with its phase."""
    return {"kind": "PersistentVolumeClaim", "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"accessModes": list(modes), "storageClassName": storage_class, "resources": {"requests": {"storage": "500Gi"}}},
            "status": {"phase": phase, **({"accessModes": list(modes)} if phase == "Bound" else {})}}


def secret(name: str, keys: tuple[str, ...]) -> dict:
    """A Secret (values are placeholders: the preflight looks at keys only)."""
    return {"kind": "Secret", "metadata": {"name": name, "namespace": NAMESPACE}, "type": "Opaque",
            "data": {key: "cGxhY2Vob2xkZXI=" for key in keys}}


class FakeKubeApi:
    """Serve ``answers`` ({path: (status, body)}; GET only) and SelfSubjectAccessReviews (``allowed``: set of
    (group, resource, verb, namespace); ``"*"`` allows everything). ``requests`` records (method, path, token)."""

    def __init__(self, answers: dict[str, tuple[int, dict]], allowed=("*",)):
        self.answers, self.allowed = answers, set(allowed)
        self.requests: list[tuple[str, str, str]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _token(self) -> str:
                return self.headers.get("Authorization", "").removeprefix("Bearer ")

            def do_GET(self):
                path = self.path.split("?")[0]
                fake.requests.append(("GET", path, self._token()))
                self._reply(*fake.answers.get(path, status(404, f"the server could not find the requested resource ({path})")))

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                fake.requests.append(("POST", self.path, self._token()))
                if self.path != "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews":
                    self._reply(*status(404, "not found"))
                    return
                attributes = body["spec"]["resourceAttributes"]
                key = (attributes.get("group", ""), attributes["resource"], attributes["verb"], attributes.get("namespace", ""))
                allowed = "*" in fake.allowed or key in fake.allowed
                self._reply(201, {**body, "status": {"allowed": allowed, **({} if allowed else {"reason": ""})}})

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The server's base URL."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def kubeconfig(self, path: Path, token: str = "kube-test-token", namespace: str = NAMESPACE) -> Path:
        """Write a kubeconfig (token auth, plain HTTP) pointing at this server."""
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": token}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}]}))
        return path

    def __enter__(self) -> "FakeKubeApi":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
