"""FAKE Argo executor: runs a rendered WorkflowTemplate's DAG on this machine, the way Argo would.

Not Argo: no controller, no pods. What it does keep is what the steps rely on:

* tasks start in ``depends`` order; ``withParam`` fans a task out over the JSON list a
  ``{{tasks.X.outputs.parameters.Y}}`` holds (an empty list skips the task);
* each "pod" runs the template's container ``command`` + ``args`` exactly (the
  ``grace-pipeline`` console script is run as ``python -m pipeline.cli``), with the env
  the template declares (Secret and ConfigMap references resolved from dicts) and a
  fresh, empty work folder (an emptyDir);
* input artifacts are downloaded from, and output artifacts uploaded to, their ``s3.key``
  in a REAL S3 bucket (the artifact repository); folders are key prefixes;
* output parameters are read from their ``valueFrom.path``;
* a failed pod is retried like Argo's ``retryStrategy`` (a new pod, fresh work folder) when
  its exit code is one the strategy's expression lists, up to ``limit`` times (no backoff
  wait); a pod killed by signal N exits 128+N, as Kubernetes reports it.

The only rewrites are the pod-local addresses: ``/grace`` and ``/tmp/grace-plan`` become
folders of the fake pod, and ``localhost:<vLLM port>`` a fake model server's address.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from steps.store import Store

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


def _depends_targets(depends: str) -> list[str]:
    return sorted({t.split(".")[0] for t in re.findall(r"[A-Za-z0-9][-A-Za-z0-9]*(?:\.[A-Za-z]+)?", depends)})


class FakeArgo:
    """Run ``template`` (a WorkflowTemplate dict) with ``parameters`` overriding its defaults."""

    def __init__(self, template: dict, parameters: dict[str, str], repository: Store, secrets: dict[tuple[str, str], str],
                 configmaps: dict[str, dict[str, str]], root: Path, localhost_map: dict[str, str], on_pod_start=None):
        spec = template["spec"]
        self.templates = {t["name"]: t for t in spec["templates"]}
        self.entrypoint = spec["entrypoint"]
        self.workflow_parameters = {p["name"]: p.get("value", "") for p in spec["arguments"]["parameters"]}
        unknown = set(parameters) - set(self.workflow_parameters)
        assert not unknown, f"not parameters of the template: {unknown}"
        self.workflow_parameters.update(parameters)
        self.repository, self.secrets, self.configmaps = repository, secrets, configmaps
        self.root, self.localhost_map = root, localhost_map
        self.on_pod_start = on_pod_start  # called with (task, inputs, Popen) as each pod starts (fault injection)
        self.task_outputs: dict[str, dict[str, str]] = {}
        self.pods: list[PodRun] = []

    def _substitute(self, text: str, scope: dict[str, str]) -> str:
        def value(match: re.Match) -> str:
            expression = match.group(1).strip()
            if expression.startswith("workflow.parameters."):
                return self.workflow_parameters[expression.removeprefix("workflow.parameters.")]
            if expression.startswith("tasks."):
                _, task, _, _, name = expression.split(".", 4)
                return self.task_outputs[task][name]
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
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GRACE_", "DEEPSEEK_"))}
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

    def run_pod(self, task: str, template: dict, inputs: dict[str, str]) -> PodRun:
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
        assert container["command"] == ["grace-pipeline"]
        pod.mkdir(parents=True, exist_ok=True)
        process = subprocess.Popen([sys.executable, "-m", "pipeline.cli", *args], cwd=pod, env=self._env(container),
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if self.on_pod_start:
            self.on_pod_start(task, inputs, process)
        output, _ = process.communicate(timeout=300)
        exit_code = process.returncode if process.returncode >= 0 else 128 - process.returncode
        run = PodRun(task, template["name"], args, exit_code, output)
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
        """Run the entrypoint DAG; return 'Succeeded' or 'Failed' (like Argo, failed tasks block their dependents)."""
        tasks = {t["name"]: t for t in self.templates[self.entrypoint]["dag"]["tasks"]}
        phases: dict[str, str] = {}
        while len(phases) < len(tasks):
            ready = [t for name, t in tasks.items() if name not in phases and all(d in phases for d in _depends_targets(t.get("depends", "")))]
            assert ready, f"no task can start: cycle or missing dependency among {set(tasks) - set(phases)}"
            for task in ready:
                phases[task["name"]] = self._run_task(task, phases)
        return "Succeeded" if all(p in ("Succeeded", "Skipped") for p in phases.values()) else "Failed"

    def _allowed(self, depends: str, phases: dict[str, str]) -> bool:
        expression = depends
        for name in sorted(_depends_targets(depends), key=len, reverse=True):
            phase = phases[name]
            expression = re.sub(rf"\b{re.escape(name)}\.(Succeeded|Failed|Skipped)\b",
                                lambda m: str(m.group(1) == phase), expression)
            expression = re.sub(rf"(?<![-\w.]){re.escape(name)}(?![-\w.])", str(phase in ("Succeeded", "Skipped")), expression)
        return eval(expression.replace("&&", " and ").replace("||", " or "))  # noqa: S307 - our own generated expression

    @staticmethod
    def _retried(template: dict, exit_code: int) -> bool:
        """Argo's retry decision for a Failed pod under the template's expression (the exit-code list it holds)."""
        expression = template.get("retryStrategy", {}).get("expression", "")
        codes = re.search(r"asInt\(lastRetry\.exitCode\) in \[([\d, ]+)\]", expression)
        return bool(codes) and exit_code in {int(c) for c in codes.group(1).split(",")}

    def _run_task(self, task: dict, phases: dict[str, str]) -> str:
        if task.get("depends") and not self._allowed(task["depends"], phases):
            return "Omitted"
        template = self.templates[task["template"]]
        arguments = {p["name"]: p["value"] for p in task.get("arguments", {}).get("parameters", [])}
        items: list[Optional[dict]] = [None]
        if "withParam" in task:
            items = json.loads(self._substitute(task["withParam"], {}))
            if not items:
                return "Skipped"
        runs = []
        for item in items:
            scope = {f"item.{k}": str(v) for k, v in (item or {}).items()}
            inputs = {k: self._substitute(v, scope) for k, v in arguments.items()}
            run = self.run_pod(task["name"], template, inputs)
            for _ in range(int(template.get("retryStrategy", {}).get("limit", 0))):
                if run.exit_code == 0 or not self._retried(template, run.exit_code):
                    break
                run = self.run_pod(task["name"], template, inputs)
            runs.append(run)
        if len(runs) == 1 and "withParam" not in task:
            self.task_outputs[task["name"]] = runs[0].parameters
        return "Succeeded" if all(r.exit_code == 0 for r in runs) else "Failed"
