"""Exact scoring against the REAL embedded model: the HTTP path equals a direct computation."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import numpy as np
import pytest

from pipeline.embedded import EmbeddedServers, gguf_path
from pipeline.registry import EMBEDDED_DEFAULT, load_registry
from steps.llm_client import LLMClient
from steps.probabilities import score_row
from steps.scoring import continuation_logprob

pytestmark = pytest.mark.embedded
CONTEXT = "Question: How likely is it that exactly 2 of the 3 letters have checks?\nAnswer:"
CONTINUATIONS = [" 70%", " 100%", " 10%", " yes"]


def _direct_scores(gguf: Path) -> dict[str, float]:
    """Sum of token log-probabilities computed here with llama_cpp.Llama and numpy (float64)."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=128, n_threads=1, logits_all=True, verbose=False)
    context_tokens = llm.tokenize(CONTEXT.encode(), add_bos=True, special=True)
    scores = {}
    for continuation in CONTINUATIONS:
        tokens = llm.tokenize((CONTEXT + continuation).encode(), add_bos=True, special=True)
        assert tokens[: len(context_tokens)] == context_tokens  # the option starts on a token boundary
        llm.reset()
        llm.eval(tokens)
        logits = llm.scores[: len(tokens)].astype(np.float64)
        total = 0.0
        for i in range(len(context_tokens) - 1, len(tokens) - 1):
            row = logits[i]
            total += row[tokens[i + 1]] - (row.max() + np.log(np.exp(row - row.max()).sum()))
        scores[continuation] = total
    return scores


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with EmbeddedServers(load_registry()[EMBEDDED_DEFAULT], 1, tmp_path_factory.mktemp("logs")) as servers:
        yield servers


def test_http_scores_equal_direct_llama_cpp(server):
    expected = _direct_scores(gguf_path(load_registry()[EMBEDDED_DEFAULT]))

    async def go():
        async with httpx.AsyncClient(timeout=120) as http:
            body = (await LLMClient(http, server.urls, 1).post_json("/v1/completions", {
                "prompt": [CONTEXT + c for c in CONTINUATIONS], "max_tokens": 1, "echo": True, "logprobs": 1})).body
        return {c: continuation_logprob(choice["logprobs"], c)[0] for c, choice in zip(CONTINUATIONS, body["choices"])}

    got = asyncio.run(go())
    for continuation in CONTINUATIONS:
        assert got[continuation] == pytest.approx(expected[continuation], abs=1e-3)
    assert got[" 10%"] != got[" 100%"]  # options sharing the first token '1' get different scores


def test_row_distributions_sum_to_one(server, study1, study1_table):
    model = load_registry()[EMBEDDED_DEFAULT]

    async def go():
        async with httpx.AsyncClient(timeout=300) as http:
            return await score_row(study1_table.frame.iloc[1].to_dict(), study1, model, LLMClient(http, server.urls, 1), "exact")

    distributions = asyncio.run(go())
    assert set(distributions) == {"state0", "state1", "state2", "state3", "knowledge"}
    for d in distributions.values():
        assert abs(sum(d.probs.values()) - 1.0) < 1e-9
        assert 0 < d.mass <= 1
        assert len(set(round(p, 12) for p in d.probs.values())) > 1  # not a uniform fallback
