"""Benchmark: the query and probabilities stages against their bound, before/after the client's connection pool; peak memory.

All measured in one run against the FAKE server (tests/fakes) started as its own process,
every request (chat, completions, tokenize) held a fixed latency (default 20 ms), at
concurrency 64, so the bound (Little's law) is concurrency / latency = 3,200 requests/s. The
benchmark repeats the bundled example rows, and the server answers a completions request it
has seen before from a cache (same bytes), so that its CPU goes to HTTP rather than to
recomputing echo bodies: on a 2-core machine the client, not the fake, is measured. Echo replies
are shaped as vLLM's (a ``top_logprobs`` entry per prompt token: about 110 kB per Study 2 row).

* each stage (Experiment 1 ``query`` on Study 1, one request per row; Experiment 2
  ``probabilities`` on Study 2, exact scoring: tokenize, detokenize, one tokenize per option
  form, one completions request per row), run by the project's step function with its
  group-commit checkpoint, twice:

  - **before**: ``LLMClient`` over httpx's own connection pool (``httpx.AsyncClient`` with
    64 connections: how runs sent requests until issue 21), on ``--baseline-rows`` rows;
  - **after**: ``LLMClient`` over :class:`steps.http_session.AiohttpSession` sized to the
    concurrency (what runs use), on ``--rows`` rows (default 20,000);

  - for probabilities also **after, replies parsed whole**: the same, with every echo reply
    parsed in full by orjson instead of :func:`steps.echo_reply.decode_echo` (the reply path's baseline);

  each printed as rows/s, requests/s and the fraction of the bound, with the client's CPU
  per request and the reply bytes per row. The fraction compares throughputs, so the row counts need not match;
* the HTTP client alone (``LLMClient.post_json`` in a sliding window, no step): the ceiling;
* peak memory (max RSS, in a fresh process each) of loading and validating a study file of
  ``--memory-rows`` rows (default 100,000), and of a whole ``grace-pipeline run --stages query``
  over ``--run-rows`` rows (default 20,000; 0 skips it).

Run from the repository root: ``python -m benchmarks.runner_throughput``. Targets (issue 21):
each stage at >= 0.5 of the bound (stretch 0.7); <= 400 MB peak for 100,000 rows (issue 12).
On a shared machine the fractions move with the load; the before/after ratio is the figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Mapping, Optional

import httpx
import pandas as pd

from pipeline.config import example_study_path
from schemas.settings import ModelSpec, SamplingSettings
from steps import probabilities
from steps.checkpoint import Checkpoint
from steps.http_session import AiohttpSession, HttpSession, HttpxSession, Reply
from steps.llm_client import LLMClient, completed_in_window
from steps.probabilities import run_probability_step
from steps.query import run_query_step
from steps.studies import load_study

REPO = Path(__file__).resolve().parents[1]
MODEL = ModelSpec(name="fake-model", hf_id="fake-model")
STAGE_STUDY = {"query": 1, "probabilities": 2}


class CountingSession:
    """A session that counts the requests it passes on (the probabilities stage sends several per row)."""

    def __init__(self, inner: HttpSession):
        self.inner, self.requests, self.reply_bytes = inner, 0, 0

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Reply:
        self.requests += 1
        reply = await self.inner.post(url, body, headers)
        self.reply_bytes += len(reply.body)
        return reply

    async def get(self, url: str, headers: Mapping[str, str], timeout_s: Optional[float] = None) -> Reply:
        return await self.inner.get(url, headers, timeout_s)

    async def aclose(self) -> None:
        await self.inner.aclose()


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far (Linux; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _fake_server(latency_ms: float) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.fakes.fake_openai_server", "--port", str(port), "--latency-ms", str(latency_ms),
                             "--latency-every-post", "--cache-replies", "--vllm-echo-top-logprobs"],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc, f"http://127.0.0.1:{port}"
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the fake server did not start")


def _study(number: int, rows: int) -> pd.DataFrame:
    """``rows`` rows of the bundled example of study ``number``, repeated, with distinct participant ids."""
    base = pd.read_csv(example_study_path(number))
    frame = pd.concat([base] * (rows // len(base) + 1), ignore_index=True).head(rows)
    frame["participant_id" if number == 1 else "Participant_ID"] = range(rows)
    return frame


async def _open(pool: str, concurrency: int) -> tuple[HttpSession, Optional[httpx.AsyncClient]]:
    """The session of ``pool``: 'httpx' (httpx's own pool, as before) or 'aiohttp' (as runs now)."""
    if pool == "httpx":
        http = httpx.AsyncClient(timeout=httpx.Timeout(600, connect=10, pool=None),
                                 limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency))
        return HttpxSession(http), http
    return AiohttpSession(concurrency), None


async def _stage(stage: str, pool: str, url: str, rows: int, concurrency: int, folder: Path, full_parse: bool = False) -> dict:
    """Run ``stage`` over ``rows`` rows through ``pool``; wall time, rows done, requests, client CPU.

    ``full_parse``: echo replies parsed whole (orjson), not by :func:`steps.echo_reply.decode_echo` (the reply path's baseline).
    """
    if full_parse:
        saved, probabilities.decode_echo = probabilities.decode_echo, lambda body: None
        try:
            return await _stage(stage, pool, url, rows, concurrency, folder)
        finally:
            probabilities.decode_echo = saved
    spec = load_study(STAGE_STUDY[stage])
    frame = _study(spec.number, rows)
    inner, http = await _open(pool, concurrency)
    session = CountingSession(inner)
    client = LLMClient(session, [url], concurrency)
    try:
        with Checkpoint(folder / f"{stage}-{pool}-{time.monotonic_ns()}.jsonl", {"bench": stage}) as checkpoint:
            started, cpu = time.perf_counter(), time.process_time()
            if stage == "query":
                outcome = await run_query_step(frame, spec, MODEL, client, SamplingSettings(), checkpoint, "bench", 1)
            else:
                outcome = await run_probability_step(frame, spec, MODEL, client, checkpoint, "bench", "exact")
            wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    finally:
        await session.aclose()
        if http is not None:
            await http.aclose()
    if outcome.failed:
        raise RuntimeError(f"{stage} through {pool}: {outcome.failed} rows failed")
    return {"wall": wall, "rows": outcome.done, "requests": session.requests, "cpu": cpu, "reply_bytes": session.reply_bytes}


async def _client_only(pool: str, url: str, requests: int, concurrency: int) -> dict:
    """The HTTP client alone (``LLMClient.post_json`` in a sliding window, no step, no checkpoint): the stages' ceiling."""
    session, http = await _open(pool, concurrency)
    client = LLMClient(session, [url], concurrency)
    payload = lambda i: {"model": "fake-model", "messages": [{"role": "user", "content": f"row {i}"}], "seed": i}  # noqa: E731
    try:
        started, cpu = time.perf_counter(), time.process_time()
        async for _ in completed_in_window(range(requests), lambda i: client.post_json("/v1/chat/completions", payload(i)), concurrency):
            pass
        return {"wall": time.perf_counter() - started, "rows": requests, "requests": requests, "cpu": time.process_time() - cpu}
    finally:
        await session.aclose()
        if http is not None:
            await http.aclose()


def _line(name: str, result: dict, bound: float) -> str:
    per_s, n = result["requests"] / result["wall"], result["requests"]
    return (f"  {name:22s} {result['rows'] / result['wall']:7,.0f} rows/s {per_s:7,.0f} requests/s = {per_s / bound:.3f} of the bound; "
            f"CPU per request: client {result['cpu'] / n * 1000:.2f} ms, fake server {result['server_cpu'] / n * 1000:.2f} ms"
            + (f"; replies {result['reply_bytes'] / result['rows'] / 1000:.1f} kB per row" if "reply_bytes" in result else ""))


def _measured(server: subprocess.Popen, run) -> dict:
    """``run()``'s result with the fake server's CPU seconds meanwhile."""
    before = _cpu_s(server.pid)
    result = run()
    return {**result, "server_cpu": _cpu_s(server.pid) - before}


_REPORT_PEAK = ("import atexit, resource; atexit.register(lambda: print('PEAK-KB', "
                "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, flush=True)); ")


def _peak_mb(code: str, *args: str) -> float:
    """Max RSS (MB) of a fresh Python process running ``code`` (reported by the process itself at exit)."""
    done = subprocess.run([sys.executable, "-c", _REPORT_PEAK + code, *args], cwd=REPO, check=True, capture_output=True, text=True)
    (line,) = [ln for ln in done.stdout.splitlines() if ln.startswith("PEAK-KB ")]
    return int(line.split()[1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000, help="rows per stage through the pool runs use (after)")
    parser.add_argument("--baseline-rows", type=int, default=1_000, help="rows per stage through httpx's pool (before: ~15x slower)")
    parser.add_argument("--stages", default="query,probabilities")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--memory-rows", type=int, default=100_000, help="0 skips the memory measurements")
    parser.add_argument("--run-rows", type=int, default=20_000)
    args = parser.parse_args()
    bound = args.concurrency / (args.latency_ms / 1000.0)
    print(f"concurrency {args.concurrency}, fake latency {args.latency_ms:g} ms on every request, bound {bound:,.0f} requests/s, "
          f"{os.cpu_count()} CPUs; before = httpx's own pool ({args.baseline_rows:,} rows), after = aiohttp pool ({args.rows:,} rows)")
    summary: dict[str, float] = {}
    pools = (("before: httpx pool", "httpx", args.baseline_rows), ("after: aiohttp pool", "aiohttp", args.rows))
    server, url = _fake_server(args.latency_ms)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for stage in args.stages.split(","):
                print(f"{stage} stage (study {STAGE_STUDY[stage]}):")
                for label, pool, rows in pools:
                    result = _measured(server, lambda: asyncio.run(_stage(stage, pool, url, rows, args.concurrency, Path(tmp))))
                    summary[f"{stage} {pool}"] = result["requests"] / result["wall"] / bound
                    print(_line(label, result, bound), flush=True)
                print(f"  after / before: {summary[f'{stage} aiohttp'] / summary[f'{stage} httpx']:.1f}x")
                if stage == "probabilities":  # the reply path's baseline: each echo reply parsed whole
                    result = _measured(server, lambda: asyncio.run(_stage(stage, "aiohttp", url, args.rows, args.concurrency, Path(tmp),
                                                                          full_parse=True)))
                    summary["probabilities aiohttp, full parse"] = result["requests"] / result["wall"] / bound
                    print(_line("after, replies parsed whole", result, bound), flush=True)
            print("HTTP client alone (chat requests, no step):")
            for label, pool, rows in pools:
                result = _measured(server, lambda: asyncio.run(_client_only(pool, url, rows, args.concurrency)))
                summary[f"client {pool}"] = result["requests"] / result["wall"] / bound
                print(_line(label, result, bound), flush=True)
    finally:
        server.kill()
        server.wait()

    if args.memory_rows:
        with tempfile.TemporaryDirectory() as tmp:
            big = Path(tmp) / "study1_big.csv"
            _study(1, args.memory_rows).to_csv(big, index=False)
            load = ("import sys; from steps.inputs import load_study_table; from steps.studies import load_study; "
                    "load_study_table(sys.argv[1], load_study(1))")
            print(f"peak memory, loading and validating {args.memory_rows:,} rows: {_peak_mb(load, str(big)):.0f} MB "
                  f"(imports alone: {_peak_mb('import steps.inputs, pandas, pyarrow'):.0f} MB)")
            if args.run_rows:
                server, url = _fake_server(args.latency_ms)
                try:
                    part = Path(tmp) / "study1_run.csv"
                    _study(1, args.run_rows).to_csv(part, index=False)
                    run = ("import sys; from pipeline.cli import main; sys.exit(main(['run', '--endpoint', 'fake-model=' + sys.argv[1], "
                           "'--studies', '1', '--study1', sys.argv[2], '--stages', 'query', '--concurrency', sys.argv[4], "
                           "'--output', sys.argv[3]]))")
                    started = time.perf_counter()
                    peak = _peak_mb(run, url, str(part), str(Path(tmp) / "out"), str(args.concurrency))
                    wall = time.perf_counter() - started
                    print(f"whole run (grace-pipeline run --stages query, {args.run_rows:,} rows, incl. start-up and tables): "
                          f"{args.run_rows / wall:,.0f} rows/s = {args.run_rows / wall / bound:.2f} of the bound, "
                          f"peak memory {peak:.0f} MB")
                finally:
                    server.kill()
                    server.wait()
    print(json.dumps({k: round(v, 3) for k, v in summary.items()}))


if __name__ == "__main__":
    main()
