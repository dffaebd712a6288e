"""Experiment 1 pure halves: payloads, response parsing, reasoning split, seeds."""

from __future__ import annotations

import pytest

from pipeline.registry import load_registry
from schemas.settings import SamplingSettings
from steps.query import ResponseFormatError, build_chat_payload, parse_chat_response, row_seed
from steps.reasoning import SplitReply, no_answer_reason, split_reply, split_think_tags

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
    parsed = parse_chat_response(VLLM_REASONING_BODY, reasoning=True)
    assert parsed.answer == "Initial Answer: 3"
    assert parsed.reasoning_trace == "Two of three were seen..."
    assert parsed.trace_split == "server"


TRACE = "Two of three were seen, so"


@pytest.mark.parametrize("content,reasoning,expected", [
    pytest.param(f"<think>{TRACE}</think>\nIt was good.", True, SplitReply("It was good.", TRACE, "think-tags"), id="finished-with-tags"),
    pytest.param(f"{TRACE}\n</think>\n\nIt was good.", True, SplitReply("It was good.", TRACE, "think-tags"),
                 id="finished-prompt-opened-the-block"),
    pytest.param(f"{TRACE} and then", True, SplitReply(None, f"{TRACE} and then", "think-tags"), id="cut-off-no-opening-tag"),
    pytest.param(f"<think>{TRACE}", True, SplitReply(None, TRACE, "think-tags"), id="cut-off-with-opening-tag"),
    pytest.param(f"{TRACE}\n</think>\n\n", True, SplitReply("", TRACE, "think-tags"), id="finished-trace-empty-answer"),
    pytest.param("It was good.", False, SplitReply("It was good.", None, None), id="not-a-reasoning-model"),
    pytest.param(f"<think>{TRACE}</think>It was good.", False, SplitReply("It was good.", TRACE, "think-tags"),
                 id="other-model-with-a-complete-block"),
    pytest.param(f"<think>{TRACE}", False, SplitReply(None, TRACE, "think-tags"), id="other-model-opened-a-block-never-closed"),
    pytest.param("<think>a</think>x<think>b</think>y", True, SplitReply("y", "a\n\nx\n\nb", "think-tags"), id="two-traces"),
    pytest.param("<think>a</think>x<think>b", True, SplitReply(None, "a\n\nx\n\nb", "think-tags"), id="second-trace-never-ended"),
])
def test_split_think_tags(content, reasoning, expected):
    assert split_think_tags(content, reasoning) == expected
    assert split_reply({"role": "assistant", "content": content}, reasoning) == expected


@pytest.mark.parametrize("message,expected", [
    pytest.param({"reasoning_content": TRACE, "content": "It was good."}, SplitReply("It was good.", TRACE, "server"),
                 id="vllm-0.10-reasoning_content"),
    pytest.param({"reasoning": TRACE, "content": "It was good."}, SplitReply("It was good.", TRACE, "server"), id="vllm-0.11-reasoning"),
    pytest.param({"reasoning": TRACE, "reasoning_content": None, "content": "It was good."}, SplitReply("It was good.", TRACE, "server"),
                 id="new-name-populated-old-null"),
    pytest.param({"reasoning": TRACE, "reasoning_content": "", "content": "It was good."}, SplitReply("It was good.", TRACE, "server"),
                 id="new-name-populated-old-empty"),
    pytest.param({"reasoning_content": TRACE, "content": None}, SplitReply(None, TRACE, "server"), id="server-split-cut-off"),
    pytest.param({"reasoning_content": None, "content": f"{TRACE}</think>It was good."}, SplitReply("It was good.", TRACE, "think-tags"),
                 id="null-field-means-the-server-split-nothing"),
])
def test_a_trace_the_server_split_is_used_as_is(message, expected):
    assert split_reply({"role": "assistant", **message}, reasoning=True) == expected


def test_a_reply_without_an_answer_fails_with_its_reason():
    cut = SplitReply(None, TRACE, "think-tags")
    assert "cut off at max_tokens=4096 before it ended (no </think>); raise --max-tokens" in no_answer_reason(cut, "length", 4096)
    assert "never ended (no </think>; finish_reason 'stop')" in no_answer_reason(cut, "stop", 4096)
    assert no_answer_reason(SplitReply("", TRACE, "think-tags"), "stop", 10).startswith("empty answer after the reasoning trace")
    empty = no_answer_reason(SplitReply("", None, None), "length", 10)
    assert empty == "empty answer: generation stopped at max_tokens=10; raise --max-tokens"
    assert no_answer_reason(SplitReply("It was good.", TRACE, "server"), "stop", 10) is None


@pytest.mark.parametrize("body", [{}, {"choices": []}, {"choices": [{"text": "completion-style"}]},
                                  {"choices": [{"message": {"content": 5}}]}, {"choices": [{"message": "text"}]}])
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
