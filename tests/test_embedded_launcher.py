"""The embedded launcher checks that each server computes before any row is sent (FAKE servers, no llama.cpp)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pipeline.model_server import embedded
from pipeline.model_server.embedded import EmbeddedServers
from pipeline.registry import load_registry
from steps.errors import EXIT_SERVER, ServerError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def fake_launch(monkeypatch, tmp_path):
    """Launch ``tests/fakes/crashing_model_server.py`` in the given mode instead of llama.cpp."""
    def use(mode: str) -> None:
        monkeypatch.setattr(embedded, "gguf_path", lambda model: tmp_path / "model.gguf")
        monkeypatch.setattr(embedded, "server_command", lambda model, gguf, port: [
            sys.executable, str(REPO / "tests" / "fakes" / "crashing_model_server.py"), "--port", str(port), "--mode", mode])
    return use


def _model():
    return load_registry()["gemma-3-270m"]


def test_a_server_that_crashes_on_its_first_computation_is_reported_at_start_with_the_fix(fake_launch, tmp_path):
    fake_launch("segfault")
    with pytest.raises(ServerError) as caught:
        with EmbeddedServers(_model(), 2, tmp_path / "logs"):
            pytest.fail("a server that crashes on its first computation must not be handed to the run")
    message = str(caught.value)
    assert caught.value.exit_code == EXIT_SERVER
    assert "crashed on its first computation (signal 11, SIGSEGV)" in message
    assert 'CMAKE_ARGS="-DGGML_NATIVE=OFF"' in message and "--force-reinstall --no-deps --no-cache-dir llama-cpp-python==" in message
    assert "ggml_backend_amx_mul_mat: (fake) about to crash" in message  # the server's own log tail


def test_a_server_that_refuses_its_first_computation_is_reported_with_its_answer(fake_launch, tmp_path):
    fake_launch("http500")
    with pytest.raises(ServerError, match="first computation with HTTP 500: .*fake engine failure"):
        with EmbeddedServers(_model(), 1, tmp_path / "logs"):
            pass


def test_servers_that_compute_are_handed_over_and_stopped(fake_launch, tmp_path):
    fake_launch("ok")
    with EmbeddedServers(_model(), 2, tmp_path / "logs") as servers:
        assert len(servers.urls) == 2
        procs = [proc for proc, _ in servers._procs]
        assert all(proc.poll() is None for proc in procs)
    assert all(proc.poll() is not None for proc in procs)


def test_a_worker_that_dies_while_the_run_uses_it_is_reported_at_once(fake_launch, tmp_path, capsys):
    import signal
    import time

    fake_launch("ok")
    with EmbeddedServers(_model(), 2, tmp_path / "logs") as servers:
        victim = servers._procs[1][0]
        victim.send_signal(signal.SIGKILL)
        said = ""
        for _ in range(300):  # polls for the watcher's line (at most 30 s), no bound on how fast it comes
            said += capsys.readouterr().err
            if "exited" in said:
                break
            time.sleep(0.1)
        survivor_alive = servers._procs[0][0].poll() is None
    assert f"error: the embedded model server gemma-3-270m at {servers.urls[1]} exited (signal 9, SIGKILL)" in said
    assert "the other 1 worker(s) take its requests" in said and "embedded-gemma-3-270m-1.log" in said
    assert survivor_alive
    assert "exited" not in capsys.readouterr().err  # stopping the servers is not reported as a death


def test_an_illegal_instruction_gets_the_build_for_this_cpu_not_the_portable_one(tmp_path):
    from pipeline.model_server.embedded import crash_message

    message = crash_message(-4, tmp_path / "missing.log")
    assert "(signal 4, SIGILL)" in message and "lacks an instruction set" in message
    assert 'CMAKE_ARGS="-DGGML_NATIVE=ON" .venv/bin/pip install --force-reinstall --no-deps --no-cache-dir llama-cpp-python==' in message
    assert "GGML_NATIVE=OFF" not in message
