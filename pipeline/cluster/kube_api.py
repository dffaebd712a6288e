"""A small read-mostly client of the Kubernetes API for the preflight (:mod:`pipeline.cluster.preflight`).

Credentials are found as ``kubectl`` finds them: inside a pod, its ServiceAccount (the workflow's plan step);
elsewhere ``$KUBECONFIG`` or ``~/.kube/config`` with its current context (token, client certificate or an exec
plugin such as GKE's or EKS's, resolved by the official ``kubernetes`` package's config loader). Requests go through
httpx; a transport can be passed in (tests). Answers are returned with their HTTP status, never raised for a 4xx:
the preflight decides what "forbidden" or "not found" means. The token never appears in a message or a repr.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import httpx

from steps.errors import ConfigError

IN_CLUSTER_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
TIMEOUT_S = 10.0


class KubeUnreachable(ConfigError):
    """The Kubernetes API server did not answer (the preflight then says it could not check, and goes on)."""


@dataclass
class KubeApi:
    """One Kubernetes API server and identity. ``where`` says which (e.g. 'kubeconfig context prod')."""

    host: str
    token: Optional[str] = field(default=None, repr=False)
    verify: Any = True
    cert: Optional[tuple[str, str]] = None
    namespace: Optional[str] = None
    where: str = ""
    transport: Optional[httpx.BaseTransport] = field(default=None, repr=False)

    def with_token(self, token: str, who: str) -> "KubeApi":
        """The same server, as another identity (a bearer token, e.g. the Argo token a submission uses)."""
        return KubeApi(self.host, token, self.verify, None, self.namespace, who, self.transport)

    def _client(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return httpx.Client(base_url=self.host, headers=headers, verify=self.verify, cert=self.cert, timeout=TIMEOUT_S,
                            transport=self.transport)

    def _send(self, method: str, path: str, body: Optional[dict] = None) -> tuple[int, dict]:
        try:
            with self._client() as client:
                response = client.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise KubeUnreachable(f"the Kubernetes API server {self.host} ({self.where}) did not answer: {type(exc).__name__}") from None
        try:
            data = response.json()
        except ValueError:
            data = {}
        return response.status_code, data if isinstance(data, dict) else {}

    def get(self, path: str) -> tuple[int, dict]:
        """GET ``path``: (HTTP status, JSON body)."""
        return self._send("GET", path)

    def may(self, verb: str, resource: str, namespace: str, group: str = "", name: Optional[str] = None) -> tuple[int, Optional[bool]]:
        """A SelfSubjectAccessReview: (HTTP status, whether this identity may ``verb`` the ``resource``; None if unanswered)."""
        attributes = {"verb": verb, "resource": resource, "group": group, "namespace": namespace, **({"name": name} if name else {})}
        code, body = self._send("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                                {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                                 "spec": {"resourceAttributes": attributes}})
        allowed = (body.get("status") or {}).get("allowed")
        return code, allowed if code in (200, 201) and isinstance(allowed, bool) else None


def _from_configuration(configuration, namespace: Optional[str], where: str) -> KubeApi:
    """A KubeApi from a ``kubernetes.client.Configuration`` the official loader filled in."""
    if configuration.refresh_api_key_hook is not None:  # exec plugins and expiring tokens
        configuration.refresh_api_key_hook(configuration)
    # the client's key name is "BearerToken" in recent releases, "authorization" in older ones
    header = configuration.get_api_key_with_prefix("BearerToken") or configuration.get_api_key_with_prefix("authorization") or ""
    token = header.split(" ", 1)[1] if header.lower().startswith("bearer ") else (header or None)
    verify: Any = configuration.ssl_ca_cert or True if configuration.verify_ssl else False
    cert = (configuration.cert_file, configuration.key_file) if configuration.cert_file else None
    return KubeApi(configuration.host.rstrip("/"), token, verify, cert, namespace, where)


def from_environment(kubeconfig: Optional[str] = None) -> Optional[KubeApi]:
    """The Kubernetes API as this process can reach it: in a pod its ServiceAccount, else the kubeconfig's current
    context; None when there is neither (no credentials: the preflight is skipped)."""
    from kubernetes import client as k8s_client
    from kubernetes import config as k8s_config
    from kubernetes.config.config_exception import ConfigException

    configuration = k8s_client.Configuration()
    if os.environ.get("KUBERNETES_SERVICE_HOST") and IN_CLUSTER_TOKEN.exists():
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)
        except ConfigException as exc:
            raise ConfigError(f"this pod's Kubernetes credentials cannot be read: {exc}") from None
        namespace = IN_CLUSTER_NAMESPACE.read_text().strip() if IN_CLUSTER_NAMESPACE.exists() else None
        return _from_configuration(configuration, namespace, "this pod's ServiceAccount")
    path = kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or str(Path.home() / ".kube" / "config")
    if not Path(path).is_file():
        return None
    try:
        k8s_config.load_kube_config(config_file=path, client_configuration=configuration, persist_config=False)
        _, active = k8s_config.list_kube_config_contexts(config_file=path)
    except (ConfigException, OSError, ValueError) as exc:
        raise ConfigError(f"the kubeconfig {path} cannot be used: {exc}") from None
    context = (active or {}).get("context") or {}
    return _from_configuration(configuration, context.get("namespace"), f"kubeconfig context {(active or {}).get('name', '?')}")
