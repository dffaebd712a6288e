"""Benchmark: Experiment 2 scoring cost and accuracy, every method considered, on two servers, in one run.

Methods (all on the server-rendered chat context, ``steps/server_prompt.py``):

* ``shared``: the default exact method, one request per question instance listing every
  option as a token-id prompt (the embedded server evaluates the context once and each
  option as a continuation of it);
* ``per-option``: the same scores with one request per option (each prompt evaluated from
  scratch: the reference for the max |delta log-prob|);
* ``first-token``: one request per question instance, no echo (Study 1 only).

Servers: the REAL embedded server (Gemma 3 270M on this machine) and a VLLM-SHAPED FAKE
(``tests/fakes``), which counts every prompt token of every prompt as vLLM does for
prompt-logprob requests (they skip the prefix cache, vLLM PR #17251).

Printed per server x study x method, all measured in this run: prompt tokens the server
evaluated per row (``usage.prompt_tokens`` minus ``prompt_tokens_details.cached_tokens``) and
its ratio to the minimum (each context once + each distinct option-token position once),
options scored per second, and for ``shared`` the max |delta log-prob| of any option against
``per-option`` (from scratch).

Run from the repository root: ``python -m benchmarks.scoring_throughput [--rows1 4 --rows2 4]``.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import httpx

from pipeline.config import example_study_path
from pipeline.model_server.embedded import EmbeddedServers, default_workers
from pipeline.registry import EMBEDDED_DEFAULT, load_registry
from schemas.settings import ModelSpec
from steps.inputs import load_study_table
from steps.llm_client import LLMClient, completed_in_window
from steps.probabilities import COMPLETIONS_PATH, _score_first_token, option_scores, scoring_messages
from steps.scoring import Unscorable
from steps.server_prompt import minimum_prompt_tokens, question_ids
from steps.studies import load_study
from tests.fakes.fake_openai_server import FakeOpenAIServer

METHODS = ("shared", "per-option", "first-token")


async def measure(urls: list[str], model: ModelSpec, study: int, rows: int, method: str, concurrency: int) -> dict:
    """Score the first ``rows`` rows of ``study`` with ``method``; counts, timing and every option's score."""
    spec = load_study(study)
    frame = load_study_table(example_study_path(study), spec).frame.head(rows)
    counted = {"requests": 0, "evaluated": 0, "minimum": 0, "unscorable": 0}
    scores: dict[tuple, float] = {}

    async def count(response: httpx.Response) -> None:
        if response.request.url.path == COMPLETIONS_PATH:
            await response.aread()
            usage = response.json().get("usage") or {}
            counted["requests"] += 1
            counted["evaluated"] += usage.get("prompt_tokens", 0) - (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)

    async with httpx.AsyncClient(timeout=600, event_hooks={"response": [count]}) as http:
        client = LLMClient(http, urls, concurrency)

        async def one(item) -> int:
            index, row = item
            options = 0
            for question in spec.probability_questions:
                for instance, extra in question.instances():
                    messages = scoring_messages(question, spec, row, extra, model)
                    q = await question_ids(client, model, messages, question.options)
                    counted["minimum"] += minimum_prompt_tokens(q)
                    options += len(question.options)
                    if method == "first-token":
                        try:
                            await _score_first_token(client, model, messages, question.options)
                        except Unscorable:
                            counted["unscorable"] += 1
                        continue
                    for label, values in (await option_scores(client, model, q, separate_requests=method == "per-option")).items():
                        for form, value in enumerate(values):
                            scores[(index, instance, label, form)] = value
            return options

        started = time.perf_counter()
        options = sum([n async for n in completed_in_window(list(enumerate(frame.to_dict(orient="records"))), one, concurrency)])
        wall = time.perf_counter() - started
    return {"rows": rows, "options_per_s": options / wall, "requests_per_row": counted["requests"] / rows,
            "evaluated_per_row": counted["evaluated"] / rows, "minimum_per_row": counted["minimum"] / rows, "scores": scores,
            "unscorable": counted["unscorable"]}


def run_server(server: str, urls: list[str], model: ModelSpec, cases: list[tuple[int, int]], concurrency: int) -> None:
    """Measure every method on every study and print each line as soon as it is measured."""
    for study, rows in cases:
        results = {}
        for method in METHODS:
            if method == "first-token" and study == 2:
                continue  # refused: every Study 2 option starts with 'It'
            r = results[method] = asyncio.run(measure(urls, model, study, rows, method, concurrency))
            line = (f"  {server:9s} study {study} {method:11s}: {r['evaluated_per_row']:7.0f} prompt tokens/row "
                    f"(minimum {r['minimum_per_row']:5.0f}: {r['evaluated_per_row'] / r['minimum_per_row']:5.2f}x), "
                    f"{r['requests_per_row']:5.1f} requests/row, {r['options_per_s']:7.1f} options/s")
            if method == "first-token":
                line += f", {r['unscorable']} question instances unscorable (no option with a first token of its own)"
            if method == "per-option":
                shared = results["shared"]["scores"]
                delta = max(abs(v - r["scores"][k]) for k, v in shared.items())
                line += f"; shared vs from scratch: max |delta log-prob| {delta:.4f} nats over {len(shared)} option forms"
            print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows1", type=int, default=2, help="Study 1 rows (each is 5 questions, 48 option forms)")
    parser.add_argument("--rows2", type=int, default=2, help="Study 2 rows (each is 1 question, 8 options)")
    parser.add_argument("--fake-latency-ms", type=float, default=30.0)
    args = parser.parse_args()
    cases = [(1, args.rows1), (2, args.rows2)]
    embedded_model = load_registry()[EMBEDDED_DEFAULT]
    workers = default_workers()
    print(f"Experiment 2 scoring (vLLM-shaped FAKE: {args.fake_latency_ms:.0f} ms per request, concurrency 8, counts every prompt "
          f"token; embedded: {EMBEDDED_DEFAULT}, {workers} single-thread workers)", flush=True)
    with FakeOpenAIServer(latency_ms=args.fake_latency_ms) as fake:
        run_server("vllm-fake", [fake.url], ModelSpec(name="fake-model", hf_id="fake-model"), cases, 8)
    with tempfile.TemporaryDirectory() as logs, EmbeddedServers(embedded_model, workers, Path(logs)) as servers:
        run_server("embedded", servers.urls, embedded_model, cases, workers)

if __name__ == "__main__":
    main()
