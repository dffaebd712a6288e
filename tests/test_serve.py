"""The serve step's vLLM arguments, its start-up wait and its watchdog on the sidecar (FAKE servers)."""

from __future__ import annotations

import asyncio
import shlex
import time

import httpx
import pandas as pd
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


# ---- a model of the run's registry through `grace-pipeline serve --vllm-dir` ---------------------------------------

REGISTRY_MODELS = {  # the README's example plus a shipped model's fields overridden and a reasoning model with vLLM's parser
    "qwen2.5-7b-instruct": {"--model": "Qwen/Qwen2.5-7B-Instruct", "--max-model-len": "8192", "--dtype": "bfloat16"},
    "gemma-2-9b-it": {"--model": "google/gemma-2-9b-it", "--max-model-len": "2048", "--served-model-name": "gemma-9b-ops"},
    "acme-r1": {"--model": "acme/r1-distill-8b", "--reasoning-parser": "deepseek_r1", "--max-model-len": "4096"},
}


def _sidecar(vllm_dir, started: list, stop):
    """A FAKE vLLM sidecar, as the pod's: waits for the serve step's arguments file, then serves what it names."""
    import threading

    def run():
        while not (vllm_dir / "args").exists():
            if stop.is_set():
                return
            time.sleep(0.02)
        args = shlex.split((vllm_dir / "args").read_text())
        started.append(args)
        # a sidecar started with vLLM's reasoning parser sends the trace apart from the answer, as vLLM does
        started.append(FakeOpenAIServer(model=args[args.index("--served-model-name") + 1], port=int(args[args.index("--port") + 1]),
                                        reasoning="server" if "--reasoning-parser" in args else False).start())
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("name", list(REGISTRY_MODELS))
def test_a_registry_model_is_served_with_the_registrys_entry(tmp_path, name, capsys):
    import json
    import socket
    import threading

    from pipeline.cli import main
    from tests.readme_examples import readme_registry

    registry = tmp_path / "my_models.yaml"
    registry.write_text(readme_registry() + "  - {name: gemma-2-9b-it, max_model_len: 2048, served_name: gemma-9b-ops}\n"
                        "  - {name: acme-r1, hf_id: acme/r1-distill-8b, reasoning: true, reasoning_parser: deepseek_r1}\n")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    vllm_dir, started, stop = tmp_path / "vllm", [], threading.Event()
    thread = _sidecar(vllm_dir, started, stop)
    try:
        code = main(["serve", "--models", name, "--registry", str(registry), "--stages", "query,probabilities", "--studies", "2",
                     "--limit", "1", "--store", str(tmp_path / "store"), "--run-id", "serve-registry",
                     "--vllm-dir", str(vllm_dir), "--vllm-port", str(port)])
    finally:
        stop.set()
        thread.join(5)
        for server in started[1:]:
            server.stop()
    assert code == 0, capsys.readouterr()
    args = started[0]
    pairs = dict(zip(args[::2], args[1::2]))
    for flag, value in REGISTRY_MODELS[name].items():
        assert pairs[flag] == value, (flag, args)
    assert ("--reasoning-parser" in args) == (name == "acme-r1")  # only a reasoning model with a parser gets one
    manifest = json.loads((tmp_path / "store" / "serve-registry" / "manifest.json").read_text())
    server = manifest["invocations"][-1]["servers"][name]
    assert server["engine"] == "vllm sidecar" and server["vllm_args"] == args
    assert ("--reasoning-parser deepseek_r1" in server.get("reasoning_split", "")) == (name == "acme-r1")
    raw = pd.read_parquet(tmp_path / "store" / "serve-registry" / "exp1" / f"{name}_study2_raw_responses.parquet")
    assert (raw.status == "ok").all() and list(raw.trace_split.fillna("")) == ["server" if name == "acme-r1" else ""] * len(raw)


def test_a_reasoning_model_without_a_parser_is_split_by_the_pipeline():
    from pipeline.manifest import reasoning_split

    model = load_registry()["deepseek-r1-distill-llama-8b"]
    assert vllm_args(model, 8000)[-2:] == ["--reasoning-parser", "deepseek_r1"]
    assert reasoning_split(model, sidecar=True).startswith("server: vLLM --reasoning-parser deepseek_r1")
    no_parser = model.model_copy(update={"reasoning_parser": None})
    assert "--reasoning-parser" not in vllm_args(no_parser, 8000)
    assert reasoning_split(no_parser, sidecar=True).startswith("client: the text before </think>")
    assert reasoning_split(model, sidecar=False).startswith("client:") and reasoning_split(MODEL, sidecar=True) is None
    with pytest.raises(ValueError, match="reasoning is false"):
        MODEL.model_validate({**MODEL.model_dump(), "reasoning_parser": "deepseek_r1"})
