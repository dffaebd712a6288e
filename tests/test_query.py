"""Experiment 1 pure halves: payloads, response parsing, reasoning split, seeds."""

from __future__ import annotations

import pytest

from pipeline.registry import load_registry
from schemas.settings import SamplingSettings
from steps.query import ResponseFormatError, build_chat_payload, parse_chat_response, row_seed, split_reasoning

# Recorded shapes: llama-cpp-python 0.3.36 server and vLLM (with a reasoning parser).
LLAMA_CPP_BODY = {
    "id": "chatcmpl-f4a9", "object": "chat.completion", "created": 1795623016, "model": "gemma-3-270m",
    "choices": [{"index": 0, "message": {"content": "It wasn't terrible.", "role": "assistant"}, "logprobs": None,
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 153, "completion_tokens": 6, "total_tokens": 159},
}
VLLM_REASONING_BODY = {
    "id": "chatcmpl-1", "object": "chat.completion", "model": "deepseek-ai/DeepSeek-R1-Distill-Llama-8B",
    "choices": [{"index": 0, "message": {"role": "assistant", "reasoning_content": "Two of three were seen...",
                                         "content": "Initial Answer: 3", "tool_calls": []},
                 "logprobs": None, "finish_reason": "stop", "stop_reason": None}],
    "usage": {"prompt_tokens": 300, "total_tokens": 420, "completion_tokens": 120},
}


def test_parse_llama_cpp_body():
    parsed = parse_chat_response(LLAMA_CPP_BODY)
    assert (parsed.answer, parsed.reasoning_trace, parsed.finish_reason, parsed.prompt_tokens, parsed.completion_tokens) == (
        "It wasn't terrible.", None, "stop", 153, 6)


def test_parse_vllm_reasoning_field():
    parsed = parse_chat_response(VLLM_REASONING_BODY)
    assert parsed.answer == "Initial Answer: 3"
    assert parsed.reasoning_trace == "Two of three were seen..."


@pytest.mark.parametrize("content,answer,trace", [
    pytest.param("<think>hmm</think>\nIt was good.", "It was good.", "hmm", id="tags"),
    pytest.param("hmm, the prompt opened the tag</think>It was good.", "It was good.", "hmm, the prompt opened the tag", id="closing-only"),
    pytest.param("<think>still thinking when cut off", "", "still thinking when cut off", id="unfinished"),
    pytest.param("It was good.", "It was good.", None, id="no-trace"),
    pytest.param("<think>a</think>x<think>b</think>y", "xy", "a\n\nb", id="two-traces"),
])
def test_split_reasoning(content, answer, trace):
    assert split_reasoning(content) == (answer, trace)


@pytest.mark.parametrize("body", [{}, {"choices": []}, {"choices": [{"text": "completion-style"}]},
                                  {"choices": [{"message": {"content": 5}}]}])
def test_malformed_bodies_raise(body):
    with pytest.raises(ResponseFormatError):
        parse_chat_response(body)


def test_payload_uses_served_name_sampling_and_reasoning_budget():
    registry = load_registry()
    sampling = SamplingSettings(temperature=0.3, max_tokens=100, seed=7)
    payload = build_chat_payload(registry["gemma-2-9b-it"], [{"role": "user", "content": "x"}], sampling, seed=42)
    assert payload["model"] == "google/gemma-2-9b-it"
    assert (payload["temperature"], payload["max_tokens"], payload["seed"]) == (0.3, 100, 42)
    reasoning = build_chat_payload(registry["deepseek-r1-distill-llama-8b"], [], sampling, seed=1)
    assert reasoning["max_tokens"] == 4096


def test_row_seeds_are_distinct_and_stable():
    seeds = {row_seed(1, 1, r, k) for r in range(300) for k in range(3)}
    assert len(seeds) == 900
    assert row_seed(1, 1, 5, 0) == row_seed(1, 1, 5, 0) != row_seed(2, 1, 5, 0)
    assert all(0 <= s < 2**31 for s in seeds)


def test_max_tokens_zero_is_refused():
    with pytest.raises(ValueError):
        SamplingSettings(max_tokens=0)  # 0 means unlimited on llama.cpp
