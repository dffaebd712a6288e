"""Tests, corrections and intervals of steps.stats, against values computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as scipy_stats

from steps import stats


@pytest.mark.parametrize("d, p", [
    pytest.param([1, 1, 1, 1, 1], 1 / 32, id="all-positive-exact"),
    pytest.param([0, 0, 0], 1.0, id="no-difference"),
    pytest.param([1, -1], 0.75, id="balanced"),
    pytest.param([2, 1, -1], 3 / 8, id="mixed: patterns with mean >= 2/3 are +++, ++-, +-+"),
])
def test_sign_flip_p_exact(d, p):
    assert stats.sign_flip_p(np.array(d, float)) == pytest.approx(p)


def test_sign_flip_beyond_exact_is_monte_carlo_with_plus_one():
    d = np.ones(stats.EXACT_UP_TO + 4)
    assert stats.sign_flip_p(d) == pytest.approx(1 / (stats.RANDOM_FLIPS + 1))
    assert stats.smallest_p(stats.EXACT_UP_TO + 4) == pytest.approx(1 / (stats.RANDOM_FLIPS + 1))
    noisy = np.random.default_rng(1).normal(0, 1, 40)
    assert stats.sign_flip_p(noisy, seed=5) == stats.sign_flip_p(noisy, seed=5)  # deterministic with a seed


def test_smallest_attainable_p():
    assert stats.smallest_p(6) == pytest.approx(1 / 64)
    assert stats.smallest_p(4) == pytest.approx(1 / 16)
    assert stats.smallest_p(0) == 1.0
    assert stats.sign_flip_p(np.full(6, 0.3)) == pytest.approx(stats.smallest_p(6))  # reached by an all-positive sample


def test_holm_by_hand():
    # sorted .005 .01 .03 .04 -> x4 x3 x2 x1 = .02 .03 .06 .04 -> running max .02 .03 .06 .06
    adjusted = stats.holm(np.array([0.01, 0.04, 0.03, 0.005]))
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    with_nan = stats.holm(np.array([0.01, np.nan, 0.02]))
    assert np.isnan(with_nan[1]) and with_nan[[0, 2]] == pytest.approx([0.02, 0.02])
    assert stats.holm(np.array([0.4, 0.3])) == pytest.approx([0.6, 0.6])  # .3 x 2 = .6, then the running max over .4 x 1
    assert stats.holm(np.array([0.9, 0.8])) == pytest.approx([1.0, 1.0])  # never above 1


def test_tarone_screen_sets_aside_what_cannot_reach_its_level():
    six_items = np.full(8, 1 / 64)
    testable, k = stats.tarone_level(six_items)
    assert k == 4 and not testable.any()  # .05 / 4 = .0125 < .016: eight 6-item tests cannot reach Holm's level
    testable, k = stats.tarone_level(np.full(3, 1 / 64))
    assert k == 3 and testable.all()  # .05 / 3 = .0167 >= .016
    mixed = np.array([1e-6] * 8 + [1 / 64] * 4)
    testable, k = stats.tarone_level(mixed)
    assert k == 8 and testable.tolist() == [True] * 8 + [False] * 4
    adjusted, testable, k = stats.holm_tarone(np.full(12, 1e-6), mixed)
    assert np.isnan(adjusted[8:]).all() and adjusted[:8] == pytest.approx(8e-6)  # the untestable four cost nothing


def test_tost_shows_equivalence_only_inside_the_margin():
    small = np.array([0.01, -0.02, 0.0, 0.015, -0.01, 0.005, 0.0, 0.01])
    lower, upper = stats.tost(small, 0.1)
    assert lower == pytest.approx(1 / 256) and upper == pytest.approx(1 / 256)
    big = np.full(8, 0.3)
    lower, upper = stats.tost(big, 0.1)
    assert lower == pytest.approx(1 / 256) and upper == 1.0  # above -margin, but not below +margin: not equivalent
    reversed_ = np.full(8, -0.3)
    lower, upper = stats.tost(reversed_, 0.1)
    assert lower == 1.0 and upper == pytest.approx(1 / 256)


def test_jeffreys_interval_always_contains_the_proportion():
    n = np.repeat(np.arange(1, 61), np.arange(2, 62))
    k = np.concatenate([np.arange(0, m + 1) for m in range(1, 61)])
    lower, upper = stats.jeffreys_interval(k, n)
    assert np.all(lower <= k / n + 1e-12) and np.all(k / n <= upper + 1e-12)
    assert np.all(lower[k == 0] == 0) and np.all(upper[k == n] == 1)
    low, high = stats.jeffreys_interval(np.array([29]), np.array([50]))
    assert (low[0], high[0]) == pytest.approx((scipy_stats.beta.ppf(0.025, 29.5, 21.5), scipy_stats.beta.ppf(0.975, 29.5, 21.5)))
    assert np.isnan(stats.jeffreys_interval(np.array([0]), np.array([0]))[0][0])


def test_an_interval_that_misses_its_estimate_is_refused():
    with pytest.raises(AssertionError, match="does not contain"):
        stats.check_contains(0.0, 0.013, 0.842, "divergence")
    stats.check_contains(0.5, 0.4, 0.6, "ok")


def test_mean_interval_and_effect_size():
    values = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    mean, lower, upper = stats.mean_interval(values)
    assert mean == pytest.approx(0.35) and lower < mean < upper and 0.1 <= lower and upper <= 0.6
    assert stats.mean_interval(values) == stats.mean_interval(values)  # same seed, same interval
    assert stats.cohens_dz(values) == pytest.approx(0.35 / np.std(values, ddof=1))
    assert np.isnan(stats.mean_interval(np.array([0.3]))[1])


def test_spearman_brown_and_divergence():
    assert stats.spearman_brown(0.5) == pytest.approx(2 / 3)
    assert stats.spearman_brown(0.9) == pytest.approx(1.8 / 1.9)
    assert stats.js_divergence(np.array([0.5, 0.5, 0.0]), np.array([0.5, 0.5, 0.0])) == pytest.approx(0.0)
    assert stats.js_divergence(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(1.0)


@pytest.mark.parametrize("p, text", [(0.0004, "< .001"), (0.0156, ".016"), (1.0, "1"), (float("nan"), "NA")])
def test_format_p(p, text):
    assert stats.format_p(p) == text
