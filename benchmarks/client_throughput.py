"""Benchmark: the project's sliding-window client vs the seed's batch-and-wait scheme.

Drives the FAKE server (tests/fakes) with a lognormal latency distribution and prints,
all measured in this one run:

* rows/s of ``LLMClient`` + ``completed_in_window`` (window = concurrency);
* rows/s of the seed's scheme: batches of 10 sent together, wait for the slowest;
* the Little's-law bound: concurrency / mean request latency (measured).

Run from the repository root: ``python -m benchmarks.client_throughput [--rows 400]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import httpx

from steps.llm_client import LLMClient, completed_in_window
from tests.fakes.fake_openai_server import FakeOpenAIServer

PATH = "/v1/chat/completions"


def _payload(i: int) -> dict:
    return {"model": "fake-model", "messages": [{"role": "user", "content": f"row {i}"}], "seed": i}


async def project_client(url: str, rows: int, concurrency: int) -> tuple[float, list[float]]:
    async with httpx.AsyncClient(timeout=60) as http:
        client = LLMClient(http, [url], concurrency)
        started = time.perf_counter()
        latencies = [r.latency_ms async for r in
                     completed_in_window(range(rows), lambda i: client.post_json(PATH, _payload(i)), concurrency)]
        return time.perf_counter() - started, latencies


async def seed_batches(url: str, rows: int, batch: int) -> float:
    async with httpx.AsyncClient(timeout=60) as http:
        started = time.perf_counter()
        for first in range(0, rows, batch):
            await asyncio.gather(*(http.post(url + PATH, json=_payload(i)) for i in range(first, min(rows, first + batch))))
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--median-ms", type=float, default=200.0)
    parser.add_argument("--sigma", type=float, default=0.6, help="lognormal sigma of the fake latency")
    args = parser.parse_args()
    with FakeOpenAIServer(latency_ms=args.median_ms, latency_sigma=args.sigma, rng_seed=1) as server:
        wall, latencies = asyncio.run(project_client(server.url, args.rows, args.concurrency))
    with FakeOpenAIServer(latency_ms=args.median_ms, latency_sigma=args.sigma, rng_seed=1) as server:
        seed_wall = asyncio.run(seed_batches(server.url, args.rows, args.concurrency))
    mean_s = statistics.fmean(latencies) / 1000.0
    bound = args.concurrency / mean_s
    ours, seed = args.rows / wall, args.rows / seed_wall
    print(f"{args.rows} requests, concurrency {args.concurrency}, latency lognormal(median {args.median_ms:.0f} ms, sigma {args.sigma}); "
          f"measured mean {mean_s * 1000:.0f} ms, p95 {statistics.quantiles(latencies, n=20)[18]:.0f} ms")
    print(f"  sliding window (project) : {ours:7.1f} rows/s  ({ours / bound:.0%} of the bound)")
    print(f"  batch-and-wait (seed)    : {seed:7.1f} rows/s  ({seed / bound:.0%} of the bound)")
    print(f"  Little's-law bound       : {bound:7.1f} rows/s  (concurrency / mean latency)")
    print(f"  speed-up over the seed   : {ours / seed:.2f}x")


if __name__ == "__main__":
    main()
