"""FAKE Argo executor: runs a rendered WorkflowTemplate's DAG on this machine, the way Argo would.

Not Argo: no controller, no pods. What it does keep is what the steps rely on:

* tasks start in ``depends`` order; ``withParam`` fans a task out over the JSON list a
  ``{{tasks.X.outputs.parameters.Y}}`` holds (an empty list skips the task); a task whose
  template is a DAG runs that DAG with the task's arguments as its inputs; nodes get Argo's
  names (``task(index:item)`` for a fanned-out task: the item's text, or for a JSON object its
  sorted ``key:value`` pairs), recorded in ``nodes``;
* the workflow's phase follows Argo's DAG rule (controller ``dag.go: assessDAGPhase``): the
  phases of the DAG's ``target`` tasks (default: its leaf tasks), an omitted task taking the
  phase of the branch that led to it (Failed over Succeeded);
* a pod with a ``vllm`` sidecar gets a FAKE vLLM server (``sidecar_factory``), started when the
  step writes the sidecar's arguments file (``--vllm-dir``/args) on a free port that replaces
  ``--vllm-port``; every start is recorded in ``vllm_starts`` (served model name, arguments);
* ``ARGO_PROGRESS_FILE`` points into the pod; its last content is kept in ``PodRun.progress``;
* each "pod" runs the template's container ``command`` + ``args`` exactly (the
  ``grace-pipeline`` console script is run as ``python -m pipeline.cli``), with the env
  the template declares (Secret and ConfigMap references resolved from dicts) and a
  fresh, empty work folder (an emptyDir);
* input artifacts are downloaded from, and output artifacts uploaded to, their ``s3.key``
  in a REAL S3 bucket (the artifact repository); folders are key prefixes;
* output parameters are read from their ``valueFrom.path``;
* a failed pod is retried like Argo's ``retryStrategy`` (a new pod, fresh work folder) when the
  strategy's expression, evaluated as Argo does with ``lastRetry.status/exitCode/message``
  (:func:`retry_decision`), says so, up to ``limit`` times (no backoff wait); a pod killed by
  signal N exits 128+N, as Kubernetes reports it;
* a template's ``timeout`` (a GPU step's deadline) is substituted and must be a Go duration in
  seconds, as the plan step writes it (``PodRun.timeout``); nothing here waits for it.

The only rewrites are the pod-local addresses: ``/grace`` and ``/tmp/grace-plan`` become
folders of the fake pod, and the vLLM sidecar's port a fake model server's.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Optional

from steps.store import Store
from tests.fakes.fake_openai_server import FakeOpenAIServer

REPO = Path(__file__).resolve().parents[2]
_EXPR = re.compile(r"\{\{([^{}]+)\}\}")


@dataclass
class PodRun:
    task: str
    template: str
    args: list[str]
    exit_code: int
    output: str
    parameters: dict[str, str] = field(default_factory=dict)
    node: str = ""
    progress: Optional[str] = None
    timeout: Optional[str] = None


def fake_vllm(served_name: str, port: int, vllm_dir: Path):
    """The default FAKE vLLM sidecar: a fake OpenAI server for ``served_name`` that writes a log line."""
    (vllm_dir / "vllm.log").write_text(f"FAKE vLLM serving {served_name} on port {port}\n")
    return FakeOpenAIServer(model=served_name, port=port).start()


def retry_decision(expression: str, status: str, exit_code: str, message: str = "") -> bool:
    """Argo's answer to a retryStrategy ``expression`` (expr-lang; the generated ones are Python-compatible: ``==``, ``!=``,
    ``and``, ``or``, ``in [..]``, ``asInt``) for a last attempt that ended ``status`` with ``exit_code`` (a string, "-1" when
    the main container never ran, as Argo's controller sets it) and ``message``."""
    last = SimpleNamespace(status=status, exitCode=exit_code, message=message)
    return bool(eval(expression, {"__builtins__": {}}, {"lastRetry": last, "asInt": int}))  # noqa: S307 - our own generated expression


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _depends_targets(depends: str) -> list[str]:
    return sorted({t.split(".")[0] for t in re.findall(r"[A-Za-z0-9][-A-Za-z0-9]*(?:\.[A-Za-z]+)?", depends)})


class FakeArgo:
    """Run ``template`` (a WorkflowTemplate dict) with ``parameters`` overriding its defaults."""

    def __init__(self, template: dict, parameters: dict[str, str], repository: Store, secrets: dict[tuple[str, str], str],
                 configmaps: dict[str, dict[str, str]], root: Path, localhost_map: Optional[dict[str, str]] = None,
                 on_pod_start=None, sidecar_factory: Callable = fake_vllm):
        spec = template["spec"]
        self.templates = {t["name"]: t for t in spec["templates"]}
        self.entrypoint = spec["entrypoint"]
        self.workflow_parameters = {p["name"]: p.get("value", "") for p in spec["arguments"]["parameters"]}
        unknown = set(parameters) - set(self.workflow_parameters)
        assert not unknown, f"not parameters of the template: {unknown}"
        self.workflow_parameters.update(parameters)
        self.repository, self.secrets, self.configmaps = repository, secrets, configmaps
        self.root, self.localhost_map = root, localhost_map or {}
        self.on_pod_start = on_pod_start  # called with (task, inputs, Popen) as each pod starts (fault injection)
        self.sidecar_factory = sidecar_factory
        self.name = "grace-pipeline-fake"  # {{workflow.name}}
        self.pods: list[PodRun] = []
        self.nodes: dict[str, str] = {}  # node name -> phase
        self.vllm_starts: list[tuple[str, list[str]]] = []

    def _substitute(self, text: str, scope: dict[str, str], task_outputs: Optional[dict] = None) -> str:
        def value(match: re.Match) -> str:
            expression = match.group(1).strip()
            if expression == "workflow.name":
                return self.name
            if expression.startswith("workflow.parameters."):
                return self.workflow_parameters[expression.removeprefix("workflow.parameters.")]
            if expression.startswith("tasks."):
                _, task, _, _, name = expression.split(".", 4)
                return (task_outputs or {})[task][name]
            if expression in scope:
                return scope[expression]
            raise KeyError(f"unresolved Argo expression {{{{{expression}}}}}")
        return _EXPR.sub(value, text)

    def _pod_path(self, path: str, pod: Path) -> Path:
        for prefix in ("/tmp/grace-plan", "/grace"):
            if path.startswith(prefix):
                return pod / prefix.strip("/").replace("/", "_") / path[len(prefix):].lstrip("/")
        raise AssertionError(f"unexpected pod path {path}")

    def _env(self, container: dict) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GRACE_", "DEEPSEEK_", "HF_", "ARGO_"))}
        for source in container.get("envFrom", []):
            env.update(self.configmaps[source["configMapRef"]["name"]])
        for var in container.get("env", []):
            if "value" in var:
                env[var["name"]] = var["value"]
            else:
                ref = var["valueFrom"]["secretKeyRef"]
                secret = self.secrets.get((ref["name"], ref["key"]))
                assert secret is not None or ref.get("optional"), f"required Secret {ref} missing"
                if secret is not None:
                    env[var["name"]] = secret
        return env | {"PYTHONPATH": str(REPO)}

    def _start_sidecar(self, pod: Path, args: list[str], process: subprocess.Popen, started: list) -> None:
        """Wait for the serve step's vLLM arguments file, then start the FAKE vLLM server it asks for."""
        vllm_dir = Path(args[args.index("--vllm-dir") + 1])
        while process.poll() is None and not (vllm_dir / "args").exists():
            time.sleep(0.05)
        if process.poll() is not None:
            return
        vllm_args = shlex.split((vllm_dir / "args").read_text())
        served, port = vllm_args[vllm_args.index("--served-model-name") + 1], int(vllm_args[vllm_args.index("--port") + 1])
        self.vllm_starts.append((served, vllm_args))
        started.append(self.sidecar_factory(served, port, vllm_dir))

    def run_pod(self, task: str, template: dict, inputs: dict[str, str], node: str = "") -> PodRun:
        scope = {f"inputs.parameters.{k}": v for k, v in inputs.items()}
        declared = {p["name"] for p in template.get("inputs", {}).get("parameters", [])}
        assert declared == set(inputs), f"{task}: arguments {sorted(inputs)} != inputs {sorted(declared)}"
        pod = self.root / f"pod-{len(self.pods):03d}-{task}"
        for artifact in template.get("inputs", {}).get("artifacts", []):
            key, path = self._substitute(artifact["s3"]["key"], scope), self._pod_path(self._substitute(artifact["path"], scope), pod)
            keys = [key] if self.repository.exists(key) else self.repository.list(key)
            assert keys or artifact.get("optional"), f"{task}: input artifact {key} does not exist"
            for found in keys:
                target = path if found == key else path / found[len(key) + 1:]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(self.repository.read_bytes(found))
        container = template["container"]
        args = [self._substitute(a, scope) for a in container["args"]]
        for prefix in ("/tmp/grace-plan", "/grace"):
            args = [str(self._pod_path(a, pod)) if a.startswith(prefix) else a for a in args]
        for local, fake in self.localhost_map.items():
            args = [a.replace(local, fake) for a in args]
        sidecar = any(s["name"] == "vllm" for s in template.get("sidecars", []))
        if sidecar:
            args[args.index("--vllm-port") + 1] = str(_free_port())
        assert container["command"] == ["grace-pipeline"]
        pod.mkdir(parents=True, exist_ok=True)
        progress_file = pod / "argo-progress"
        process = subprocess.Popen([sys.executable, "-m", "pipeline.cli", *args], cwd=pod,
                                   env=self._env(container) | {"ARGO_PROGRESS_FILE": str(progress_file)},
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        sidecars: list = []
        watcher = threading.Thread(target=self._start_sidecar, args=(pod, args, process, sidecars), daemon=True) if sidecar else None
        if watcher:
            watcher.start()
        if self.on_pod_start:
            self.on_pod_start(task, inputs, process)
        try:
            output, _ = process.communicate(timeout=300)
        finally:
            if watcher:
                watcher.join(5)
            for server in sidecars:
                try:
                    server.stop()
                except RuntimeError:  # a test already stopped it (a sidecar that "died")
                    pass
        exit_code = process.returncode if process.returncode >= 0 else 128 - process.returncode
        timeout = self._substitute(template["timeout"], scope) if "timeout" in template else None
        assert timeout is None or re.fullmatch(r"[1-9][0-9]*s", timeout), f"{task}: timeout {timeout!r} is not a Go duration"
        run = PodRun(task, template["name"], args, exit_code, output, node=node,
                     progress=progress_file.read_text() if progress_file.exists() else None, timeout=timeout)
        self.pods.append(run)
        if exit_code != 0:
            return run
        outputs = template.get("outputs", {})
        for artifact in outputs.get("artifacts", []):
            key, path = self._substitute(artifact["s3"]["key"], scope), self._pod_path(self._substitute(artifact["path"], scope), pod)
            assert set(artifact["s3"]) == {"key"} and artifact["archive"] == {"none": {}}, "key-only, unarchived artifacts"
            files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
            assert files or artifact.get("optional"), f"{task}: output artifact {path} was not written"
            for file in files:
                self.repository.write_bytes(key if file == path else f"{key}/{file.relative_to(path).as_posix()}", file.read_bytes())
        for parameter in outputs.get("parameters", []):
            run.parameters[parameter["name"]] = self._pod_path(parameter["valueFrom"]["path"], pod).read_text()
        return run

    def run(self) -> str:
        """Run the entrypoint DAG; return its phase, 'Succeeded' or 'Failed', by Argo's rule (see the module docstring)."""
        return self.run_dag(self.templates[self.entrypoint], {}, "")

    def run_dag(self, template: dict, scope: dict[str, str], prefix: str) -> str:
        """Run a DAG template's tasks in ``depends`` order (failed tasks block their dependents) and return its phase."""
        tasks = {t["name"]: t for t in template["dag"]["tasks"]}
        phases: dict[str, str] = {}
        outputs: dict[str, dict[str, str]] = {}
        while len(phases) < len(tasks):
            ready = [t for name, t in tasks.items()
                     if name not in phases and all(d in phases for d in _depends_targets(t.get("depends", "")))]
            assert ready, f"no task can start: cycle or missing dependency among {set(tasks) - set(phases)}"
            for task in ready:
                phases[task["name"]] = self._run_task(task, phases, scope, outputs, prefix)
        target = template["dag"].get("target")
        targets = target.split(" ") if target else [
            n for n in tasks if not any(n in _depends_targets(t.get("depends", "")) for t in tasks.values())]

        def branch(name: str) -> str:
            if phases[name] != "Omitted":
                return phases[name]
            parents = [branch(d) for d in _depends_targets(tasks[name].get("depends", ""))]
            return "Failed" if "Failed" in parents else "Succeeded"
        return "Failed" if any(branch(t) == "Failed" for t in targets) else "Succeeded"

    def _allowed(self, depends: str, phases: dict[str, str]) -> bool:
        expression = depends
        for name in sorted(_depends_targets(depends), key=len, reverse=True):
            phase = phases[name]
            expression = re.sub(rf"\b{re.escape(name)}\.(Succeeded|Failed|Skipped|Errored|Omitted)\b",
                                lambda m: str(m.group(1) == phase), expression)
            expression = re.sub(rf"(?<![-\w.]){re.escape(name)}(?![-\w.])", str(phase in ("Succeeded", "Skipped")), expression)
        return eval(expression.replace("&&", " and ").replace("||", " or "))  # noqa: S307 - our own generated expression

    @staticmethod
    def _retried(template: dict, exit_code: int) -> bool:
        """Argo's retry decision for a Failed pod under the template's expression."""
        expression = template.get("retryStrategy", {}).get("expression", "")
        return bool(expression) and retry_decision(expression, "Failed", str(exit_code))

    def _run_task(self, task: dict, phases: dict[str, str], scope: Optional[dict[str, str]] = None,
                  outputs: Optional[dict] = None, prefix: str = "") -> str:
        scope, outputs = scope or {}, outputs if outputs is not None else {}
        if task.get("depends") and not self._allowed(task["depends"], phases):
            return "Omitted"
        template = self.templates[task["template"]]
        arguments = {p["name"]: p["value"] for p in task.get("arguments", {}).get("parameters", [])}
        items: list = [None]
        if "withParam" in task:
            items = json.loads(self._substitute(task["withParam"], scope, outputs))
            if not items:
                self.nodes[prefix + task["name"]] = "Skipped"
                return "Skipped"
        runs = []
        for index, item in enumerate(items):
            if item is None:
                node, item_scope = prefix + task["name"], dict(scope)
            elif isinstance(item, dict):
                node = f"{prefix}{task['name']}({index}:{','.join(sorted(f'{k}:{v}' for k, v in item.items()))})"
                item_scope = scope | {f"item.{k}": str(v) for k, v in item.items()} | {"item": json.dumps(item)}
            else:
                node, item_scope = f"{prefix}{task['name']}({index}:{item})", scope | {"item": str(item)}
            inputs = {k: self._substitute(v, item_scope, outputs) for k, v in arguments.items()}
            if "dag" in template:
                phase = self.run_dag(template, {f"inputs.parameters.{k}": v for k, v in inputs.items()}, node + ".")
                self.nodes[node] = phase
                runs.append(phase == "Succeeded")
                continue
            run = self.run_pod(task["name"], template, inputs, node)
            for _ in range(int(template.get("retryStrategy", {}).get("limit", 0))):
                if run.exit_code == 0 or not self._retried(template, run.exit_code):
                    break
                run = self.run_pod(task["name"], template, inputs, node)
            self.nodes[node] = "Succeeded" if run.exit_code == 0 else "Failed"
            runs.append(run.exit_code == 0)
            if item is None:
                outputs[task["name"]] = run.parameters
        return "Succeeded" if all(runs) else "Failed"
