"""Benchmark: Experiment 2 scoring, exact vs the seed's first-token method, on two servers.

For the FAKE server (fixed latency per request) and the REAL embedded server (Gemma 3
270M on this machine), scores the first rows of each study with both methods and
prints, all measured in this one run: options scored per second (an option = one
answer label of one question), requests and prompt tokens sent per row (as the server
counted them), and how many rows the first-token method could not score at all.

Run from the repository root: ``python -m benchmarks.scoring_throughput [--rows1 2 --rows2 4]``.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import httpx

from pipeline.config import example_study_path
from pipeline.embedded import EmbeddedServers, default_workers
from pipeline.registry import EMBEDDED_DEFAULT, load_registry
from schemas.settings import ModelSpec
from steps.inputs import load_study_table
from steps.llm_client import LLMClient, completed_in_window
from steps.probabilities import score_row
from steps.scoring import Unscorable
from steps.studies import load_study
from tests.fakes.fake_openai_server import FakeOpenAIServer


async def measure(urls, model, study, rows, method, concurrency):
    spec = load_study(study)
    frame = load_study_table(example_study_path(study), spec).frame.head(rows)
    counted = {"requests": 0, "prompt_tokens": 0}

    async def count(response: httpx.Response) -> None:
        await response.aread()
        counted["requests"] += 1
        counted["prompt_tokens"] += (response.json().get("usage") or {}).get("prompt_tokens") or 0

    options = sum(len(q.options) * len(q.instances()) for q in spec.probability_questions)
    async with httpx.AsyncClient(timeout=600, event_hooks={"response": [count]}) as http:
        client = LLMClient(http, urls, concurrency)
        async def one(row) -> int:
            try:
                await score_row(row, spec, model, client, method)
                return 0
            except Unscorable:
                return 1

        started = time.perf_counter()
        failed = sum([f async for f in completed_in_window(frame.to_dict(orient="records"), one, concurrency)])
        wall = time.perf_counter() - started
    return {"options_per_s": options * rows / wall, "requests_per_row": counted["requests"] / rows,
            "prompt_tokens_per_row": counted["prompt_tokens"] / rows, "unscorable_rows": failed, "rows": rows}


def report(server: str, results: dict) -> None:
    for (study, method), r in results.items():
        print(f"  {server:9s} study {study} {method:11s}: {r['options_per_s']:8.1f} options/s, "
              f"{r['requests_per_row']:4.1f} requests/row, {r['prompt_tokens_per_row']:7.0f} prompt tokens/row, "
              f"{r['unscorable_rows']}/{r['rows']} rows unscorable")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows1", type=int, default=2, help="Study 1 rows (each is 46 options)")
    parser.add_argument("--rows2", type=int, default=4, help="Study 2 rows (each is 8 options)")
    parser.add_argument("--fake-latency-ms", type=float, default=30.0)
    args = parser.parse_args()
    cases = [(1, args.rows1), (2, args.rows2)]
    fake_model = ModelSpec(name="fake-model", hf_id="fake-model")
    with FakeOpenAIServer(latency_ms=args.fake_latency_ms) as fake:
        fake_results = {(s, m): asyncio.run(measure([fake.url], fake_model, s, n, m, 8)) for s, n in cases for m in ("exact", "first-token")}
    embedded_model = load_registry()[EMBEDDED_DEFAULT]
    workers = default_workers()
    with tempfile.TemporaryDirectory() as logs, EmbeddedServers(embedded_model, workers, Path(logs)) as servers:
        embedded_results = {(s, m): asyncio.run(measure(servers.urls, embedded_model, s, n, m, workers)) for s, n in cases for m in ("exact", "first-token")}
    print(f"Experiment 2 scoring (fake server: {args.fake_latency_ms:.0f} ms per request, concurrency 8; "
          f"embedded: {EMBEDDED_DEFAULT}, {workers} single-thread workers)")
    report("fake", fake_results)
    report("embedded", embedded_results)


if __name__ == "__main__":
    main()
