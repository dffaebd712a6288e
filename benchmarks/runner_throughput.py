"""Benchmark: the query stage's rows/s with group-commit checkpoints vs the bound, and peak memory of a 100,000-row study.

All measured in one run, against the FAKE server (tests/fakes) started as its own process
with a fixed latency (default 20 ms) at concurrency 64, so the bound is
concurrency / latency = 3,200 rows/s:

* ``group commit``: the project's query step (:func:`steps.query.run_query_step`) with its
  checkpoint as shipped (compact records, one write + fsync at most every 0.1 s, off the
  event loop);
* ``per-row fsync`` (baseline, the previous scheme): the same step with a checkpoint that
  writes and fsyncs every full record on the event loop as it finishes;
* the HTTP client alone (the same requests, no step, no checkpoint): the ceiling for the step;
* checkpoint size relative to the step's CSV table as the runner writes it;
* peak memory (max RSS, in a fresh process each) of loading and validating a study file
  of ``--memory-rows`` rows (default 100,000), and of a whole ``grace-pipeline run --stages
  query`` over ``--run-rows`` rows of it (default 20,000; 0 skips it).

Run from the repository root: ``python -m benchmarks.runner_throughput``. Targets (issue 12):
>= 1,000 rows/s (>= 0.3 of the bound) on a 2-core machine, <= 400 MB peak for 100,000 rows.
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

import httpx
import pandas as pd

from pipeline.config import example_study_path
from schemas.raw_responses import raw_response_row_model
from schemas.settings import ModelSpec, SamplingSettings
from steps.checkpoint import Checkpoint
from steps.llm_client import LLMClient
from steps.query import run_query_step
from steps.studies import load_study
from steps.tables import coerce_to_schema

REPO = Path(__file__).resolve().parents[1]
MODEL = ModelSpec(name="fake-model", hf_id="fake-model")


class PerRowFsyncCheckpoint(Checkpoint):
    """The previous commit scheme, for comparison: every record written and fsync'ed on the event loop as it
    finishes (with today's compact records, so this line compares the commit scheme only)."""

    def add(self, record: dict) -> None:
        self._commit([record])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _fake_server(latency_ms: float) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.fakes.fake_openai_server", "--port", str(port), "--latency-ms", str(latency_ms)],
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


def _study(rows: int) -> pd.DataFrame:
    base = pd.read_csv(example_study_path(1))
    frame = pd.concat([base] * (rows // len(base) + 1), ignore_index=True).head(rows)
    frame["participant_id"] = range(rows)
    return frame


async def _query(url: str, frame: pd.DataFrame, concurrency: int, checkpoint: Checkpoint) -> tuple[float, int, int]:
    """(wall seconds, rows done, bytes of the step's CSV table as the runner writes it)."""
    spec = load_study(1)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        client = LLMClient(http, [url], concurrency)
        with checkpoint:
            started = time.perf_counter()
            outcome = await run_query_step(frame, spec, MODEL, client, SamplingSettings(), checkpoint, "bench", 1)
            wall = time.perf_counter() - started
    row_model = raw_response_row_model(spec.input_model)
    return wall, outcome.done, len(coerce_to_schema(outcome.frame, row_model).to_csv(index=False, na_rep="NA").encode())


_REPORT_PEAK = ("import atexit, resource; atexit.register(lambda: print('PEAK-KB', "
                "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, flush=True)); ")


async def _client_only(url: str, rows: int, concurrency: int) -> float:
    """rows/s of the HTTP client alone (LLMClient over httpx, no step, no checkpoint): the ceiling for the step."""
    from steps.llm_client import completed_in_window

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        client = LLMClient(http, [url], concurrency)
        payload = lambda i: {"model": "fake-model", "messages": [{"role": "user", "content": f"row {i}"}], "seed": i}  # noqa: E731
        started = time.perf_counter()
        async for _ in completed_in_window(range(rows), lambda i: client.post_json("/v1/chat/completions", payload(i)), concurrency):
            pass
        return rows / (time.perf_counter() - started)


def _peak_mb(code: str, *args: str) -> float:
    """Max RSS (MB) of a fresh Python process running ``code`` (reported by the process itself at exit)."""
    done = subprocess.run([sys.executable, "-c", _REPORT_PEAK + code, *args], cwd=REPO, check=True, capture_output=True, text=True)
    (line,) = [ln for ln in done.stdout.splitlines() if ln.startswith("PEAK-KB ")]
    return int(line.split()[1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=5000, help="rows per throughput measurement")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--memory-rows", type=int, default=100_000)
    parser.add_argument("--run-rows", type=int, default=20_000)
    args = parser.parse_args()
    bound = args.concurrency / (args.latency_ms / 1000.0)
    frame = _study(args.rows)
    print(f"query stage, {args.rows} rows, concurrency {args.concurrency}, fake latency {args.latency_ms:g} ms, "
          f"bound {bound:,.0f} rows/s, {os.cpu_count()} CPUs")
    server, url = _fake_server(args.latency_ms)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            results = {}
            for name, make in (("per-row fsync (previous)", PerRowFsyncCheckpoint), ("group commit (now)", Checkpoint)):
                path = Path(tmp) / f"{name.split()[0]}.jsonl"
                wall, done, table_csv = asyncio.run(_query(url, frame, args.concurrency, make(path, {"bench": 1})))
                results[name] = done / wall
                print(f"  {name:26s} {done / wall:8,.0f} rows/s = {done / wall / bound:.2f} of the bound; "
                      f"checkpoint {path.stat().st_size / 1e6:.1f} MB ({path.stat().st_size / table_csv:.1f}x the table)")
            ceiling = asyncio.run(_client_only(url, args.rows, args.concurrency))
            results["HTTP client alone"] = ceiling
            print(f"  {'HTTP client alone':26s} {ceiling:8,.0f} rows/s = {ceiling / bound:.2f} of the bound "
                  "(httpx requests, no step, no checkpoint)")
    finally:
        server.kill()
        server.wait()

    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "study1_big.csv"
        _study(args.memory_rows).to_csv(big, index=False)
        load = ("import sys; from steps.inputs import load_study_table; from steps.studies import load_study; "
                "load_study_table(sys.argv[1], load_study(1))")
        print(f"peak memory, loading and validating {args.memory_rows:,} rows: {_peak_mb(load, str(big)):.0f} MB "
              f"(imports alone: {_peak_mb('import steps.inputs, pandas, pyarrow'):.0f} MB)")
        if args.run_rows:
            server, url = _fake_server(args.latency_ms)
            try:
                part = Path(tmp) / "study1_run.csv"
                _study(args.run_rows).to_csv(part, index=False)
                run = ("import sys; from pipeline.cli import main; sys.exit(main(['run', '--endpoint', 'fake-model=' + sys.argv[1], "
                       "'--studies', '1', '--study1', sys.argv[2], '--stages', 'query', '--concurrency', '64', '--output', sys.argv[3]]))")
                started = time.perf_counter()
                peak = _peak_mb(run, url, str(part), str(Path(tmp) / "out"))
                wall = time.perf_counter() - started
                print(f"whole run (grace-pipeline run --stages query, {args.run_rows:,} rows, incl. start-up and tables): "
                      f"{args.run_rows / wall:,.0f} rows/s, peak memory {peak:.0f} MB")
            finally:
                server.kill()
                server.wait()
    print(json.dumps({k: round(v) for k, v in results.items()}))


if __name__ == "__main__":
    main()
