"""Scoring math on hand-built logprob responses (natural log in, bits for entropy)."""

from __future__ import annotations

import math

import pytest

from steps.scoring import (
    Unscorable,
    entropy_bits,
    first_token_distribution,
    logsumexp,
    mean_std,
    option_logprob,
    seed_literal_distribution,
    softmax_distribution,
)


def test_an_option_is_the_sum_of_its_own_positions():
    # echoed token_logprobs of context (4 tokens, BOS first) + option '70%' (3 tokens) + the generated token
    values = [None, -9.0, -0.5, -1.0, -3.5, -2.0, -0.8, -0.4]
    assert option_logprob(values, 4, 7, "option '70'") == pytest.approx(-3.5 - 2.0 - 0.8)


@pytest.mark.parametrize("bad", [3.0, 1e-9, math.inf, -math.inf, math.nan, None, "x"])
def test_an_impossible_token_logprob_makes_the_option_unscorable(bad):
    values = [None, -1.0, -0.5, bad, -0.2]
    with pytest.raises(Unscorable, match="log-probability"):
        option_logprob(values, 2, 4, "option 'yes'")


def test_missing_echo_positions_are_unscorable():
    with pytest.raises(Unscorable, match="echoed 3 log-probabilities"):
        option_logprob([None, -1.0, -0.5], 2, 5, "option 'no'")


def test_options_carrying_more_than_all_the_mass_are_refused():
    with pytest.raises(Unscorable, match="> 1"):
        softmax_distribution({"a": math.log(0.7), "b": math.log(0.6)})
    assert softmax_distribution({"a": 0.0}).mass == pytest.approx(1.0)  # exactly 1 (or within rounding) is fine


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


def test_first_token_method_refuses_an_impossible_top_k_value():
    with pytest.raises(Unscorable, match="impossible"):
        first_token_distribution({"1": 3.0, "2": -2.0}, {"10": ["10%"], "20": ["20%"]})


def test_seed_literal_reproduces_the_seeds_arithmetic():
    """seed 000, extract_token_probabilities: first variant found (as is, capitalized, lower, ' '+), else -10; softmax."""
    top = {"0%": -2.0, " 50%": -1.0, "Yes": -0.3, "1": -0.1}
    options = {"0": "0%", "10": "10%", "50": "50%", "100": "100%"}
    d = seed_literal_distribution(top, options)
    scores = [-2.0, -10.0, -1.0, -10.0]  # '10%' and '100%' are no key ('1' is not '10%'): -10
    z = sum(math.exp(v) for v in scores)
    assert [d.probs[k] for k in options] == pytest.approx([math.exp(v) / z for v in scores], abs=1e-15)
    knowledge = seed_literal_distribution(top, {"yes": "yes", "no": "no"})  # 'Yes' (capitalized) found, 'no' missing
    assert knowledge.probs["yes"] == pytest.approx(math.exp(-0.3) / (math.exp(-0.3) + math.exp(-10.0)), abs=1e-15)
    assert math.isnan(d.mass) and any("'10%' not a top-4 key" in p for p in d.problems)


def test_seed_literal_on_a_vocabulary_without_percent_tokens_is_uniform():
    """No token holds a digit and '%' (Llama-3, Gemma): every bin gets -10, so 1/11 each."""
    top = {str(i): -float(i) - 1 for i in range(10)} | {" ": -0.5}
    d = seed_literal_distribution(top, {str(p): f"{p}%" for p in range(0, 101, 10)})
    assert list(d.probs.values()) == pytest.approx([1 / 11] * 11)
    assert entropy_bits(list(d.probs.values())) == pytest.approx(math.log2(11))
