"""A small client for the Argo Workflows server (``grace-pipeline submit / status / retry``).

Built on Hera's requests-based :class:`hera.workflows.service.WorkflowsService` and its
models. Every failure talking to the server becomes an :class:`ArgoError` that names the
operation, the server URL and the workflow or template, and says what to check. The token
never appears in a message, a ``repr`` or a log line.
"""

from __future__ import annotations

import os
import re
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import requests
from hera.exceptions import HeraException
from hera.workflows.models import SubmitOpts, WorkflowRetryRequest, WorkflowSubmitRequest
from hera.workflows.service import WorkflowsService
from urllib3.exceptions import InsecureRequestWarning

from steps.errors import EXIT_BAD_INPUT, EXIT_SERVER, ConfigError, GraceError
from steps.redact import redact, secret_forms

FINAL_PHASES = frozenset({"Succeeded", "Failed", "Error"})
DEFAULT_TIMEOUT_S = 30.0  # per HTTP request; Hera itself sets none, so a dead server would hang forever
_WAIT_TRANSIENT_ERRORS = 3  # consecutive connection/5xx failures wait() tolerates before giving up
_K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_TRUE = {"1", "true", "yes", "on"}


class ArgoError(GraceError):
    """The Argo server could not be reached or refused a request.

    ``status`` is the HTTP status (``None`` when there was no HTTP answer); ``transient``
    says whether retrying the same command may help (connection errors, timeouts, 5xx).
    The exit code follows: transient -> 4 (the server could not be reached), anything else
    (401/403/404/409, TLS, a URL that is not the Argo server) -> 2 (fix the options or token).
    """

    def __init__(self, message: str, status: int | None = None, transient: bool = False):
        super().__init__(message)
        self.status = status
        self.transient = transient
        self.exit_code = EXIT_SERVER if transient else EXIT_BAD_INPUT


@dataclass(frozen=True)
class NodeState:
    """One node of a workflow, as ``status`` shows it."""

    name: str  # path below the workflow (see _readable_name)
    template: str  # templateName, or ""
    type: str  # Pod, DAG, Retry, Steps, ...
    phase: str  # Pending/Running/Succeeded/Failed/Error/Skipped/Omitted
    message: str
    started_at: str | None
    finished_at: str | None
    exit_code: str | None  # outputs.exitCode when present


class _TimeoutSession(requests.Session):
    """A session that applies a default timeout to every request (Hera passes none)."""

    def __init__(self, timeout_s: float):
        super().__init__()
        self.timeout_s = timeout_s

    def request(self, method, url, **kwargs):  # type: ignore[override]
        kwargs.setdefault("timeout", self.timeout_s)
        return super().request(method, url, **kwargs)


def _normalize_host(host: str, secure: bool = True) -> str:
    """``host:port`` or URL -> URL without trailing slash; https:// added when no scheme."""
    host = host.strip()
    if not host:
        raise ConfigError("the Argo server URL is empty: pass --argo-server or set ARGO_SERVER")
    if not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", host):
        host = ("https://" if secure else "http://") + host
    if not (host.startswith("https://") or host.startswith("http://")):
        raise ConfigError(f"Argo server {host!r} must be an http:// or https:// URL (--argo-server / ARGO_SERVER)")
    return host.rstrip("/")


def _check_name(kind: str, name: str) -> None:
    if not isinstance(name, str) or not _K8S_NAME.match(name):
        raise ConfigError(
            f"{kind} name {name!r} is not a valid Kubernetes name (lower-case letters, digits, '-' and '.')"
        )


class ArgoClient:
    """Submit, inspect and retry workflows on one Argo server, in one namespace."""

    def __init__(
        self,
        host: str,
        token: str | None,
        namespace: str,
        verify_ssl: bool = True,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ):
        """``host`` is the server URL (https:// assumed when no scheme); ``token`` may start with "Bearer "."""
        self.host = _normalize_host(host)
        self.namespace = namespace or "default"
        self.verify_ssl = verify_ssl
        token = (token or "").strip() or None
        self._token = token
        self._secrets = self._secret_forms(token)
        self._last_response: requests.Response | None = None
        session = _TimeoutSession(timeout_s)
        session.hooks["response"].append(self._remember_response)
        # Hera joins paths with urljoin(host, "api/v1/..."): without a trailing slash the last
        # path segment of the host (e.g. an ingress prefix "/argo") would be dropped.
        self._service = WorkflowsService(
            host=self.host + "/", verify_ssl=verify_ssl, token=token, namespace=self.namespace, session=session
        )
        if token is None:
            # Hera falls back to hera.shared.global_config.token; we use only what we were given.
            self._service.token = None

    @classmethod
    def from_env(
        cls,
        host: str | None = None,
        token: str | None = None,
        namespace: str | None = None,
        insecure: bool | None = None,
    ) -> "ArgoClient":
        """A client from explicit values, falling back to the argo CLI's environment variables.

        ARGO_SERVER (host:port or URL; https:// added unless ARGO_SECURE=false), ARGO_TOKEN,
        ARGO_NAMESPACE (default "default"), ARGO_INSECURE_SKIP_VERIFY ("true" -> no TLS
        verification). No server at all -> ConfigError.
        """
        host = host or os.environ.get("ARGO_SERVER", "").strip()
        if not host:
            raise ConfigError(
                "no Argo server given: pass --argo-server or set ARGO_SERVER "
                "(e.g. https://argo.example.org:2746, or localhost:2746 with a port-forward)"
            )
        secure = os.environ.get("ARGO_SECURE", "true").strip().lower() in _TRUE
        if token is None:
            token = os.environ.get("ARGO_TOKEN") or None
        namespace = namespace or os.environ.get("ARGO_NAMESPACE", "").strip() or "default"
        if insecure is None:
            insecure = os.environ.get("ARGO_INSECURE_SKIP_VERIFY", "").strip().lower() in _TRUE
        return cls(_normalize_host(host, secure=secure), token, namespace, verify_ssl=not insecure)

    @property
    def bearer_token(self) -> str | None:
        """The token without a "Bearer " prefix, for asking the Kubernetes API what this identity may do (the preflight);
        never printed."""
        if not self._token:
            return None
        return self._token.split(" ", 1)[1] if self._token.lower().startswith("bearer ") else self._token

    def __repr__(self) -> str:
        token = "set" if self._token else "none"
        return f"ArgoClient(host={self.host!r}, namespace={self.namespace!r}, token=<{token}>)"

    # -- operations ---------------------------------------------------------------------

    def submit(
        self,
        template: str,
        parameters: dict[str, str],
        generate_name: str | None = None,
        labels: dict[str, str] | None = None,
    ) -> str:
        """Submit WorkflowTemplate ``template`` with ``parameters``; return the new workflow's name."""
        _check_name("WorkflowTemplate", template)
        params = []
        for key, value in parameters.items():
            if not key or "=" in key:
                raise ConfigError(f"workflow parameter name {key!r} must be non-empty and contain no '='")
            params.append(f"{key}={value}")
        label_text = None
        if labels:
            for key, value in labels.items():
                if not key or any(c in f"{key}{value}" for c in ",="):
                    raise ConfigError(f"label {key}={value!r}: keys and values must not contain ',' or '='")
            label_text = ",".join(f"{k}={v}" for k, v in labels.items())
        req = WorkflowSubmitRequest(
            namespace=self.namespace,
            resource_kind="WorkflowTemplate",
            resource_name=template,
            submit_options=SubmitOpts(parameters=params, generate_name=generate_name, labels=label_text),
        )
        what = f"submit WorkflowTemplate {template!r}"
        workflow = self._call(what, template, lambda: self._service.submit_workflow(req, namespace=self.namespace))
        name = (workflow.get("metadata") or {}).get("name")
        if not name:
            reason = "the server's answer has no metadata.name"
            raise ArgoError(self._message(what, reason, "check the Argo server version"))
        return name

    def get(self, name: str) -> dict:
        """The workflow ``name`` as a plain dict (camelCase keys, None values left out)."""
        _check_name("workflow", name)
        return self._call(
            f"get workflow {name!r}", name, lambda: self._service.get_workflow(name, namespace=self.namespace)
        )

    def phase(self, name: str) -> str:
        """The workflow's status.phase; "" when it has not started yet."""
        return _phase_of(self.get(name))

    def nodes(self, name: str) -> list[NodeState]:
        """The workflow's nodes, sorted by start time (not started last), then name."""
        return _nodes_of(self.get(name))

    def retry(self, name: str) -> None:
        """Retry a failed workflow: only failed nodes re-run; succeeded nodes and their artifacts are kept."""
        _check_name("workflow", name)
        req = WorkflowRetryRequest(name=name, namespace=self.namespace, restart_successful=False)
        self._call(
            f"retry workflow {name!r}", name, lambda: self._service.retry_workflow(name, req, namespace=self.namespace)
        )

    def ui_link(self, name: str) -> str:
        """The workflow's page in the Argo UI."""
        return f"{self.host}/workflows/{self.namespace}/{name}"

    def wait(
        self,
        name: str,
        poll_s: float = 10.0,
        on_update: Callable[[list[NodeState]], Any] | None = None,
        timeout_s: float | None = None,
    ) -> str:
        """Poll until the workflow is Succeeded, Failed or Error; return that phase.

        ``on_update(nodes)`` is called after a poll whenever the set of (name, phase) pairs
        differs from the previous poll (the first poll counts as a change when it has nodes).
        Up to 3 consecutive transient errors (connection, timeout, 5xx) are tolerated.
        After ``timeout_s`` raises ArgoError; the workflow keeps running on the cluster.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        seen: frozenset[tuple[str, str]] = frozenset()
        failures = 0
        phase = ""
        while True:
            try:
                workflow = self.get(name)
                failures = 0
            except ArgoError as exc:
                failures += 1
                if not exc.transient or failures > _WAIT_TRANSIENT_ERRORS:
                    raise
                workflow = None
            if workflow is not None:
                phase = _phase_of(workflow)
                nodes = _nodes_of(workflow)
                current = frozenset((n.name, n.phase) for n in nodes)
                if current != seen:
                    seen = current
                    if on_update is not None:
                        on_update(nodes)
                if phase in FINAL_PHASES:
                    return phase
            if deadline is not None and time.monotonic() >= deadline:
                raise ArgoError(
                    f"workflow {name!r} on Argo server {self.host} is still {phase or 'Pending'} after "
                    f"{timeout_s:g}s; it keeps running: check it with `grace-pipeline status {name}` "
                    f"or {self.ui_link(name)}",
                    transient=True,
                )
            time.sleep(poll_s)

    # -- plumbing -----------------------------------------------------------------------

    @staticmethod
    def _secret_forms(token: str | None) -> list[str]:
        return secret_forms(token)

    def _redact(self, text: str) -> str:
        return redact(text, self._secrets)

    def _remember_response(self, response: requests.Response, *args: Any, **kwargs: Any) -> requests.Response:
        self._last_response = response
        return response

    def _message(self, what: str, reason: str, hint: str) -> str:
        where = f"on Argo server {self.host} (namespace {self.namespace!r})"
        return self._redact(f"{what} {where} failed: {reason}; {hint}")

    def _call(self, what: str, subject: str, fn: Callable[[], Any]) -> dict:
        """Run one service call; convert its result to a dict and every failure to ArgoError."""
        self._last_response = None
        try:
            with warnings.catch_warnings():
                # Hera serialises requests with pydantic's deprecated .json(); with verify_ssl off,
                # urllib3 warns on every request (once per poll in wait()).
                warnings.simplefilter("ignore", DeprecationWarning)
                warnings.simplefilter("ignore", InsecureRequestWarning)
                result = fn()
            return result.model_dump(by_alias=True, exclude_none=True, mode="json")
        except (HeraException, requests.RequestException, ValueError, KeyError, TypeError) as exc:
            error = self._convert(what, subject, exc)
            # Chain the original only when its text is free of the token (it normally is).
            text = f"{exc} {exc!r}"
            cause = None if any(secret in text for secret in self._secrets) else exc
            raise error from cause

    def _convert(self, what: str, subject: str, exc: Exception) -> ArgoError:
        if isinstance(exc, requests.exceptions.SSLError):
            return ArgoError(
                self._message(
                    what,
                    "TLS certificate verification failed",
                    "for a self-signed certificate set ARGO_INSECURE_SKIP_VERIFY=true, or use http:// "
                    "if the server runs with --secure=false",
                ),
                transient=False,
            )
        if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
            reason = "timed out" if isinstance(exc, requests.Timeout) else "could not connect"
            return ArgoError(
                self._message(
                    what,
                    reason,
                    "check --argo-server / ARGO_SERVER, that the server is running and reachable "
                    "(e.g. `kubectl -n argo port-forward svc/argo-server 2746:2746`)",
                ),
                transient=True,
            )
        response = self._last_response
        if response is None or response.ok:
            # A 2xx answer that is not an Argo object (e.g. a login page of a proxy).
            return ArgoError(
                self._message(
                    what,
                    f"the server's answer is not an Argo object ({type(exc).__name__})",
                    "check that --argo-server / ARGO_SERVER is the Argo server's URL, not a proxy or the UI",
                )
            )
        status = response.status_code
        server_msg = _server_message(response)
        detail = f"HTTP {status}" + (f" ({server_msg})" if server_msg else "")
        namespace = self.namespace
        if status == 401:
            hint = "the token was rejected: check ARGO_TOKEN / --argo-token (e.g. a fresh one from `argo auth token`)"
        elif status == 403:
            hint = (
                f"the token is not allowed to do this in namespace {namespace!r}: check the service account's "
                "RBAC and ARGO_NAMESPACE / --namespace"
            )
        elif status == 404:
            kind = "WorkflowTemplate" if what.startswith("submit") else "workflow"
            hint = (
                f"{kind} {subject!r} was not found in namespace {namespace!r}: check the name and "
                "ARGO_NAMESPACE / --namespace"
                + (" and that the WorkflowTemplate is installed" if kind == "WorkflowTemplate" else "")
            )
        elif status == 409:
            hint = "it conflicts with the resource's current state (e.g. a name that already exists)"
        elif 400 <= status < 500:
            hint = "the server rejected the request; see its message"
        else:
            hint = "the Argo server failed; retry later or check the argo-server logs"
        return ArgoError(self._message(what, detail, hint), status=status, transient=status >= 500)


def _server_message(response: requests.Response, limit: int = 300) -> str:
    try:
        body = response.json()
        text = body.get("message", "") if isinstance(body, dict) else ""
    except ValueError:
        text = ""
    text = text or response.text or ""
    text = " ".join(text.split())
    return text[:limit] + ("..." if len(text) > limit else "")


def _phase_of(workflow: dict) -> str:
    return (workflow.get("status") or {}).get("phase") or ""


def _readable_name(node: dict, workflow_name: str, node_id: str) -> str:
    """The node's path below the workflow, e.g. ``gpu1-22g(0:llama-3.1-8b-instruct).serve(0)``: a pod inside a model's
    DAG then says which model it serves (its displayName alone would be ``serve(0)``)."""
    name = node.get("name") or ""
    if workflow_name and name.startswith(workflow_name + "."):
        return name[len(workflow_name) + 1:]
    return node.get("displayName") or name or node_id


def _nodes_of(workflow: dict) -> list[NodeState]:
    raw = (workflow.get("status") or {}).get("nodes") or {}
    workflow_name = (workflow.get("metadata") or {}).get("name") or ""
    nodes = []
    for node_id, node in raw.items():
        exit_code = (node.get("outputs") or {}).get("exitCode")
        nodes.append(
            NodeState(
                name=_readable_name(node, workflow_name, node_id),
                template=node.get("templateName") or "",
                type=node.get("type") or "",
                phase=node.get("phase") or "",
                message=node.get("message") or "",
                started_at=node.get("startedAt"),
                finished_at=node.get("finishedAt"),
                exit_code=None if exit_code is None else str(exit_code),
            )
        )
    return sorted(nodes, key=lambda n: (n.started_at is None, n.started_at or "", n.name))
