"""Scoring math on hand-built logprob responses (natural log in, bits for entropy)."""

from __future__ import annotations

import math

import pytest

from steps.scoring import (
    Unscorable, continuation_logprob, entropy_bits, first_token_distribution, logsumexp, mean_std, softmax_distribution,
)


def echo(tokens, values, bos="", generated=("\n", -0.5)):
    """An echoed logprobs object like vLLM/llama.cpp return (optional BOS text first)."""
    pieces = ([bos] if bos is not None else []) + list(tokens) + [generated[0]]
    lps = ([None] if bos is not None else []) + list(values) + [generated[1]]
    offsets, position = [], 0
    for piece in pieces:
        offsets.append(position)
        position += len(piece)
    return {"tokens": pieces, "token_logprobs": lps, "text_offset": offsets}


def test_multi_token_option_with_its_own_space_token():
    lp = echo(["Answer", ":", " ", "7", "0", "%"], [-9.0, -0.5, -1.0, -3.5, -2.0, -0.8])
    score, n = continuation_logprob(lp, " 70%")
    assert n == 4 and score == pytest.approx(-1.0 - 3.5 - 2.0 - 0.8)


def test_bos_text_does_not_shift_the_continuation():
    plain = echo(["Answer", ":", " yes"], [-1.0, -0.5, -0.7], bos="")
    with_bos_text = echo(["Answer", ":", " yes"], [-1.0, -0.5, -0.7], bos="<bos>")
    assert continuation_logprob(plain, " yes") == continuation_logprob(with_bos_text, " yes") == (-0.7, 1)


def test_options_sharing_a_prefix_are_scored_over_their_full_length():
    ten = echo(["A", ":", " ", "1", "0", "%"], [-1, -1, -1, -1.2, -2.0, -0.5])
    hundred = echo(["A", ":", " ", "1", "0", "0", "%"], [-1, -1, -1, -1.2, -2.0, -3.0, -0.6])
    assert continuation_logprob(ten, " 10%")[0] == pytest.approx(-4.7)
    assert continuation_logprob(hundred, " 100%")[0] == pytest.approx(-7.8)


def test_token_straddling_the_boundary_is_unscorable():
    lp = echo(["Answer", ": y", "es"], [-1.0, -0.5, -0.7])  # ': y' crosses into the option
    with pytest.raises(Unscorable, match="token boundary"):
        continuation_logprob(lp, "yes")


def test_missing_logprob_inside_the_option_is_unscorable():
    lp = echo(["A", ":", " no"], [-1.0, -0.5, None])
    with pytest.raises(Unscorable, match="no log-probability"):
        continuation_logprob(lp, " no")


def test_tokens_that_spell_something_else_are_unscorable():
    lp = echo(["A", ":", " nope"], [-1.0, -0.5, -2.0])
    with pytest.raises(Unscorable):
        continuation_logprob(lp, " no")


@pytest.mark.parametrize("logprobs", [{}, {"tokens": ["a"], "token_logprobs": [None], "text_offset": [0]}, {"tokens": ["a", "b"], "token_logprobs": [None], "text_offset": [0, 1]}])
def test_missing_or_inconsistent_echo_is_unscorable(logprobs):
    with pytest.raises(Unscorable):
        continuation_logprob(logprobs, "b")


def test_softmax_distribution_and_mass():
    d = softmax_distribution({"a": math.log(0.2), "b": math.log(0.05), "c": math.log(0.25)})
    assert d.probs == pytest.approx({"a": 0.4, "b": 0.1, "c": 0.5})
    assert d.mass == pytest.approx(0.5)
    assert sum(d.probs.values()) == pytest.approx(1.0, abs=1e-12)


def test_entropy_in_bits_and_moments():
    assert entropy_bits([0.5, 0.5]) == pytest.approx(1.0)
    assert entropy_bits([0.25] * 4) == pytest.approx(2.0)
    assert entropy_bits([1.0, 0.0]) == 0.0
    assert mean_std([0.5, 0.5], [0, 100]) == pytest.approx((50.0, 50.0))


def test_logsumexp_is_stable():
    assert logsumexp([-1000.0, -1000.0]) == pytest.approx(-1000.0 + math.log(2))
    assert logsumexp([]) == -math.inf


def test_first_token_method_reports_collisions_and_misses_instead_of_inventing():
    top = {"1": -1.0, "2": -2.0, "5": -2.5, " ": -0.3}
    options = {"10": ["10%"], "100": ["100%"], "20": ["20%"], "50": ["50%"], "70": ["70%"]}
    d = first_token_distribution(top, options)
    assert math.isnan(d.probs["10"]) and math.isnan(d.probs["100"]) and math.isnan(d.probs["70"])
    assert d.probs["20"] + d.probs["50"] == pytest.approx(1.0)
    assert d.probs["20"] == pytest.approx(1 / (1 + math.exp(-0.5)))
    assert any("10, 100 share the first token '1'" in p for p in d.problems)
    assert any(p.startswith("70: first token not in the top") for p in d.problems)


def test_first_token_method_fails_when_nothing_is_distinguishable():
    with pytest.raises(Unscorable, match="share the first token ' '"):
        first_token_distribution({" ": -0.1}, {"a": [" 10%"], "b": [" 20%"]})


# The shape vLLM's /v1/completions returns for echo + logprobs (Llama-3 tokenizer): the BOS
# token's text is part of the token list and offsets, but not of the returned prompt text.
VLLM_ECHO = {
    "id": "cmpl-1", "object": "text_completion", "model": "meta-llama/Llama-3.1-8B-Instruct",
    "choices": [{
        "index": 0, "text": "Answer: 70%\n", "finish_reason": "length", "stop_reason": None,
        "logprobs": {
            "text_offset": [0, 17, 23, 24, 25, 27, 28],
            "token_logprobs": [None, -8.1, -0.4, -1.1, -2.6, -0.2, -0.9],
            "tokens": ["<|begin_of_text|>", "Answer", ":", " ", "70", "%", "\n"],
            "top_logprobs": [None, {"Answer": -8.1}, {":": -0.4}, {" ": -1.1}, {"70": -2.6}, {"%": -0.2}, {"\n": -0.9}],
        },
    }],
    "usage": {"prompt_tokens": 6, "total_tokens": 7, "completion_tokens": 1},
}


def test_recorded_vllm_echo_shape():
    score, n = continuation_logprob(VLLM_ECHO["choices"][0]["logprobs"], " 70%")
    assert n == 3 and score == pytest.approx(-1.1 - 2.6 - 0.2)
