"""Exact scoring decodes only what it reads of an echo reply; anything else falls back to the full parse and its checks."""

from __future__ import annotations

import asyncio
import json

import httpx
import orjson
import pytest

from schemas.settings import ModelSpec
from steps.echo_reply import decode_echo
from steps.llm_client import LLMClient
from steps.probabilities import scoring_messages
from steps.server_prompt import question_ids
from tests.fakes.fake_openai_server import FakeOpenAIServer


def _reply(study2, study2_table, **fake) -> bytes:
    question, model = study2.probability_questions[0], ModelSpec(name="fake-model", hf_id="fake-model")
    with FakeOpenAIServer(**fake) as server:
        async def go():
            async with httpx.AsyncClient(timeout=10) as http:
                ids = await question_ids(LLMClient(http, [server.url], 4), model,
                                         scoring_messages(question, study2, study2_table.frame.iloc[0].to_dict(), {}, model),
                                         question.options)
                reply = await http.post(server.url + "/v1/completions", json={
                    "model": "fake-model", "prompt": [p for _, p in ids.prompts()], "max_tokens": 1, "echo": True, "logprobs": 1})
                return reply.content
        return asyncio.run(go())


@pytest.mark.parametrize("vllm_shaped", [False, True])
def test_the_decoded_log_probabilities_are_those_of_the_full_parse(study2, study2_table, vllm_shaped):
    body = _reply(study2, study2_table, vllm_echo_top_logprobs=vllm_shaped)
    full, part = orjson.loads(body), decode_echo(body)
    assert part is not None and len(part["choices"]) == len(full["choices"]) == 8
    for mine, theirs in zip(part["choices"], full["choices"]):
        assert mine["index"] == theirs["index"]
        assert mine["logprobs"]["token_logprobs"] == theirs["logprobs"]["token_logprobs"]
        assert sum(v is not None for v in mine["logprobs"]["token_logprobs"]) > 100
    if vllm_shaped:
        assert all(isinstance(entry, dict) for entry in full["choices"][0]["logprobs"]["top_logprobs"][1:])


@pytest.mark.parametrize("body", [
    b'{"choices": [{"index": 0, "logprobs": {"token_logprobs": [null, NaN]}}]}',  # a NaN literal: json reads it, the scorer refuses it
    b'{"choices": [{"index": 0, "logprobs": "none"}]}',  # logprobs not an object
    b'{"object": "text_completion"}',  # no choices
    b'{"choices": [{"index": "0"}]}',  # index of another type
    b'{"choices": [',  # cut short
    b'not json',
])
def test_a_reply_of_another_shape_is_left_to_the_full_parse(body):
    assert decode_echo(body) is None


def test_a_missing_logprobs_object_is_kept_as_missing():
    assert decode_echo(b'{"choices": [{"index": 1, "logprobs": null}, {"index": 0}]}') == {
        "choices": [{"index": 1, "logprobs": None}, {"index": 0, "logprobs": None}]}
    assert json.loads(b'{"choices": []}') == decode_echo(b'{"choices": []}')
