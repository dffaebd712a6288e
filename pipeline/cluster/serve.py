"""The cluster's model step (``grace-pipeline serve``): every served stage of one model, against ONE server start.

With ``--vllm-dir DIR`` the model is served by the pod's vLLM sidecar, which waits for
``DIR/args`` (its command-line arguments, written here from the model's entry in the run's
registry, ``--registry`` merged over the shipped one: the template is the same for every model
of a GPU class) and writes ``DIR/exit-code`` when vLLM
exits (see ``pipeline.cluster.workflow.VLLM_WRAPPER``). The step then

* waits for ``/health`` at most the model's start-up time (:func:`pipeline.cluster.cost.startup_timeout_s`),
  failing at once if the sidecar exited;
* runs Experiment 1 and Experiment 2 of every study of the run (the local runner's plan
  for the served stages) while a watchdog polls ``/health``: a server that exited, or that
  stopped answering for :data:`DEAD_AFTER_S` after it was healthy, ends the step with exit 4
  (retryable) naming the model, within a minute; finished rows are in the checkpoints.

Either failure is recorded as the end of the model's served nodes (:mod:`pipeline.runner.outcome`), so the report
names the model and why, though the pod ends before its nodes could.

Without ``--vllm-dir`` the model's endpoint (``--endpoints``) or the embedded CPU model serves it.
"""

from __future__ import annotations

import asyncio
import shlex
import time
from pathlib import Path
from typing import Optional

import httpx

from pipeline.cluster.cost import startup_timeout_s
from pipeline.config import RunConfig, checkpoint_store
from pipeline.manifest import reasoning_split
from pipeline.plan import SERVED_STAGES, build_plan
from pipeline.progress import ProgressReporter
from pipeline.run_setup import resolve_models
from pipeline.runner.local import RunResult, ServerStarter, run_local
from pipeline.runner.outcome import record_setup_failure
from schemas.settings import ModelSpec
from steps import server_health
from steps.errors import ConfigError, ServerError

POLL_S = server_health.POLL_S
DEAD_AFTER_S = 30.0  # a healthy server that answers nothing for this long is dead (well within a minute)
ARGS_FILE, EXIT_FILE, LOG_FILE = "args", "exit-code", "vllm.log"


def vllm_args(model: ModelSpec, port: int) -> list[str]:
    """The vLLM OpenAI server's arguments for ``model`` (weights and compile cache: the sidecar's HF_HOME / VLLM_CACHE_ROOT).

    A reasoning model with a ``reasoning_parser`` is served with vLLM's ``--reasoning-parser``: the server returns
    its trace in the message's reasoning field and the answer alone (:func:`reasoning_split` says so in the manifest)."""
    args = ["--model", model.hf_id, "--served-model-name", model.request_model, "--dtype", model.dtype,
            "--tensor-parallel-size", str(model.tensor_parallel_size), "--max-model-len", str(model.max_model_len),
            "--port", str(port), "--max-logprobs", "20"]
    if model.reasoning and model.reasoning_parser:
        args += ["--reasoning-parser", model.reasoning_parser]
    return args



def write_vllm_args(vllm_dir: Path, model: ModelSpec, port: int) -> Path:
    """Write the sidecar's arguments (shell-quoted, one line), atomically: the sidecar starts when the file is complete."""
    if model.engine != "vllm":
        raise ConfigError(f"model {model.name!r} is served by {model.engine!r}, not vLLM: it cannot use a vLLM sidecar")
    vllm_dir.mkdir(parents=True, exist_ok=True)
    partial = vllm_dir / (ARGS_FILE + ".partial")
    partial.write_text(shlex.join(vllm_args(model, port)) + "\n")
    partial.replace(vllm_dir / ARGS_FILE)
    return vllm_dir / ARGS_FILE


def _exited(vllm_dir: Path) -> Optional[str]:
    """The sidecar's exit code if vLLM has exited, else None."""
    path = vllm_dir / EXIT_FILE
    return path.read_text().strip() or "?" if path.exists() else None


def _log_hint(vllm_dir: Path) -> str:
    return f"see the vLLM log (container 'vllm', archived as logs/<model>/vllm.log; in the pod {vllm_dir / LOG_FILE})"


async def wait_until_healthy(http: httpx.AsyncClient, url: str, vllm_dir: Path, model: ModelSpec, timeout_s: float,
                             poll_s: float = POLL_S) -> float:
    """Poll /health until 200; ServerError (exit 4) when the sidecar exits or ``timeout_s`` passes. Returns the seconds waited."""
    hint = f"model {model.hf_id} (registry: load_minutes {model.load_minutes}, weights {model.weights_gb} GB); {_log_hint(vllm_dir)}"
    return await server_health.wait_until_healthy(http, url, timeout_s, server=f"the vLLM server of {model.name}", hint=hint,
                                                  exited=lambda: _exited(vllm_dir), poll_s=poll_s, loading=model.hf_id)


async def watch_server(http: httpx.AsyncClient, url: str, vllm_dir: Path, model: ModelSpec, poll_s: float = POLL_S,
                       dead_after_s: float = DEAD_AFTER_S) -> None:
    """Return never; raise ServerError when the (healthy) sidecar exits or stops answering for ``dead_after_s``."""
    failing_since: Optional[float] = None
    while True:
        code = _exited(vllm_dir)
        if code is not None:
            raise ServerError(f"the vLLM server of {model.name} exited with code {code} during the run; finished rows are saved "
                              f"and a retry resumes; {_log_hint(vllm_dir)}")
        if await server_health.is_healthy(http, url):
            failing_since = None
        else:
            failing_since = failing_since or time.monotonic()
            if time.monotonic() - failing_since >= dead_after_s:
                raise ServerError(f"the vLLM server of {model.name} stopped answering /health for {dead_after_s:.0f} s after it was "
                                  f"healthy; finished rows are saved and a retry resumes; {_log_hint(vllm_dir)}")
        await asyncio.sleep(poll_s)


async def serve(config: RunConfig, progress: ProgressReporter, started: float, vllm_dir: Optional[Path], port: int,
                poll_s: float = POLL_S, dead_after_s: float = DEAD_AFTER_S, start_server: Optional[ServerStarter] = None) -> RunResult:
    """Run the served stages of ``config.models`` (one model) against its one server; see the module docstring."""
    if len(config.models) != 1:
        raise ConfigError(f"serve runs one model, got {list(config.models)}")
    if vllm_dir is None:
        return await run_local(config, progress, started, start_server)
    model = resolve_models(config, require_endpoints=False)[config.models[0]]  # the run's registry, as every step resolves it
    url = f"http://localhost:{port}"
    args = shlex.split(write_vllm_args(vllm_dir, model, port).read_text())
    server_info = {model.name: {"engine": "vllm sidecar", "vllm_args": args, "dtype": model.dtype,
                                **({"reasoning_split": reasoning_split(model, sidecar=True)} if model.reasoning else {})}}
    config = config.model_copy(update={"endpoints": {model.name: (url,)}, "wait_for_endpoint_s": 0.0})
    nodes = build_plan([model.name], sorted(config.studies), [s for s in config.stages if s in SERVED_STAGES])

    def record(error: ServerError, keep_done: bool) -> None:
        if config.run_id:  # the cluster always names the run
            record_setup_failure(checkpoint_store(config, config.run_id), nodes, error, error.exit_code, keep_done)

    async with httpx.AsyncClient() as http:
        try:
            waited = await wait_until_healthy(http, url, vllm_dir, model, startup_timeout_s(model), poll_s)
        except ServerError as exc:
            await asyncio.to_thread(record, exc, False)
            raise
        print(f"the vLLM server of {model.name} is healthy after {waited:.0f} s", flush=True)
        run = asyncio.ensure_future(run_local(config, progress, started, server_info=server_info))
        watch = asyncio.ensure_future(watch_server(http, url, vllm_dir, model, poll_s, dead_after_s))
        await asyncio.wait({run, watch}, return_when=asyncio.FIRST_COMPLETED)
        if not run.done():
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)
            try:
                watch.result()  # raises the watchdog's ServerError
            except ServerError as exc:
                await asyncio.to_thread(record, exc, True)
                raise
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)
        return run.result()
