"""The serve step's vLLM arguments, its start-up wait and its watchdog on the sidecar (FAKE servers)."""

from __future__ import annotations

import asyncio
import shlex
import time

import httpx
import pytest

from pipeline.cluster.serve import vllm_args, wait_until_healthy, watch_server, write_vllm_args
from pipeline.registry import load_registry
from steps.errors import ServerError
from tests.fakes.fake_openai_server import FakeOpenAIServer

MODEL = load_registry()["gemma-2-27b-it"]


def test_the_sidecar_gets_the_registry_entry_as_arguments(tmp_path):
    path = write_vllm_args(tmp_path / "vllm", MODEL, 8000)
    args = shlex.split(path.read_text())
    assert args == vllm_args(MODEL, 8000)
    pairs = dict(zip(args[::2], args[1::2]))
    assert pairs["--model"] == "google/gemma-2-27b-it" and pairs["--tensor-parallel-size"] == "2" and pairs["--dtype"] == "bfloat16"
    assert not (tmp_path / "vllm" / "args.partial").exists()


def test_an_embedded_model_cannot_use_a_sidecar(tmp_path):
    with pytest.raises(Exception, match="not vLLM"):
        write_vllm_args(tmp_path, load_registry()["gemma-3-270m"], 8000)


def _run(coro, limit_s: float = 120):
    """Run ``coro(http)``; a wait that never ends fails after ``limit_s`` (far above any loaded machine's delay)."""
    async def main():
        async with httpx.AsyncClient() as http:
            return await asyncio.wait_for(coro(http), limit_s)
    return asyncio.run(main())


def test_a_sidecar_that_exits_while_loading_fails_at_once(tmp_path):
    (tmp_path / "exit-code").write_text("1\n")
    with FakeOpenAIServer(healthy_after_s=3600) as loading:
        with pytest.raises(ServerError, match="exited with code 1 while loading"):
            _run(lambda http: wait_until_healthy(http, loading.url, tmp_path, MODEL, timeout_s=600, poll_s=0.1))
        assert loading.health_requests == 0  # seen before the first poll, not after the 600 s timeout


def test_the_wait_ends_at_the_models_timeout(tmp_path):
    with FakeOpenAIServer(healthy_after_s=60) as loading:
        with pytest.raises(ServerError, match="not healthy after 1 s"):
            _run(lambda http: wait_until_healthy(http, loading.url, tmp_path, MODEL, timeout_s=1, poll_s=0.2))
    with FakeOpenAIServer(healthy_after_polls=2) as server:
        _run(lambda http: wait_until_healthy(http, server.url, tmp_path, MODEL, timeout_s=600, poll_s=0.1))
        assert server.health_requests == 3  # 503 twice while "loading", then 200


def test_a_server_that_stops_answering_is_noticed(tmp_path):
    server = FakeOpenAIServer().start()
    server.stop()  # refused connections after it was healthy
    started = time.monotonic()
    with pytest.raises(ServerError, match="stopped answering /health for 1 s"):  # (the watchdog never returns otherwise)
        _run(lambda http: watch_server(http, server.url, tmp_path, MODEL, poll_s=0.1, dead_after_s=1))
    assert time.monotonic() - started >= 1  # not before dead_after_s: one failed poll is not a dead server
