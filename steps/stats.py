"""Small-sample statistics for the findings and the agreement yardsticks: tests, corrections, intervals.

Pure numpy/scipy over arrays; no tables, no files. Every random step takes a seed, so the
same input always gives the same numbers.

- Tests are exact sign-flip (permutation) tests of a mean paired difference, one-sided:
  exact over all 2^n sign patterns up to :data:`EXACT_UP_TO` units, Monte Carlo beyond. With
  n units the smallest p-value the test can give is 2^-n (n = 6 -> .016).
- Multiplicity: Holm's step-down correction within a family, after Tarone's (1990) screen
  for discrete tests: a hypothesis whose smallest attainable p cannot reach the corrected
  level is set aside as *not testable* and does not use up any of the alpha.
- Equivalence: two one-sided tests (TOST) against a margin, each a sign-flip test of the
  shifted differences.
- Intervals: Jeffreys intervals for proportions (the Beta(k+1/2, n-k+1/2) equal-tailed
  interval, with the bound at 0 when k = 0 and at 1 when k = n, so that it always holds
  k/n: checked); percentile bootstrap intervals of means.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Optional

import numpy as np
from scipy import stats

ALPHA = 0.05
LEVEL = 0.95
EXACT_UP_TO = 16  # 2^16 sign patterns x 16 units: exact and still small
RANDOM_FLIPS = 20000
BOOTSTRAP_RESAMPLES = 2000
SEED = 20130501  # fixed: the same tables always give the same numbers
_TIE = 1e-12


def check_contains(estimate: float, lower: float, upper: float, what: str) -> None:
    """Raise AssertionError when an interval printed beside ``estimate`` would not contain it (a bug, never data)."""
    if not (np.isfinite(estimate) and np.isfinite(lower) and np.isfinite(upper)):
        return
    if not (lower - 1e-9 <= estimate <= upper + 1e-9):
        raise AssertionError(f"{what}: interval [{lower}, {upper}] does not contain its estimate {estimate}")


# ---------------------------------------------------------------- tests


@lru_cache(maxsize=EXACT_UP_TO + 1)
def _flip_patterns(n: int) -> np.ndarray:
    """Every one of the 2^n sign patterns, one per row (+1 / -1)."""
    return 1.0 - 2.0 * ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1)


def sign_flip_p(differences: np.ndarray, seed: int = SEED) -> float:
    """One-sided p-value that the mean of ``differences`` is above 0: the share of sign patterns whose mean is at least
    the observed one (exact up to EXACT_UP_TO units; Monte Carlo with the +1 correction beyond). NaN for no units."""
    d = np.asarray(differences, float)
    if len(d) == 0:
        return float("nan")
    observed = d.mean()
    if len(d) <= EXACT_UP_TO:
        return float(np.mean(_flip_patterns(len(d)) @ d / len(d) >= observed - _TIE))
    signs = np.random.default_rng(seed).choice((1.0, -1.0), size=(RANDOM_FLIPS, len(d)))
    return float((np.sum(signs @ d / len(d) >= observed - _TIE) + 1) / (RANDOM_FLIPS + 1))


def smallest_p(n: int) -> float:
    """The smallest p-value :func:`sign_flip_p` can return for ``n`` units (1 for none)."""
    if n <= 0:
        return 1.0
    return 2.0 ** -n if n <= EXACT_UP_TO else max(2.0 ** -n, 1 / (RANDOM_FLIPS + 1))


def tost(differences: np.ndarray, margin: float, seed: int = SEED) -> tuple[float, float]:
    """Two one-sided tests of equivalence: (p that the mean is above -margin, p that it is below +margin).

    Equivalence within the margin is shown when both are below alpha (the TOST p is their maximum)."""
    d = np.asarray(differences, float)
    return sign_flip_p(d + margin, seed), sign_flip_p(margin - d, seed)


def tarone_level(smallest: np.ndarray, alpha: float = ALPHA) -> tuple[np.ndarray, int]:
    """Tarone's screen: (testable mask, K) for hypotheses with smallest attainable p-values ``smallest``.

    K is the least k with at most k hypotheses able to reach alpha / k; a hypothesis is testable when its smallest
    attainable p is at most alpha / K. Untestable hypotheses can never be rejected and are left out of the count."""
    smallest = np.asarray(smallest, float)
    m = len(smallest)
    for k in range(1, m + 1):
        able = smallest <= alpha / k + _TIE
        if able.sum() <= k:
            return able, k
    return np.ones(m, bool), max(m, 1)


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (reject where adjusted <= alpha); NaN entries are left out and stay NaN."""
    p = np.asarray(p, float)
    out = np.full(len(p), np.nan)
    keep = np.flatnonzero(np.isfinite(p))
    if len(keep) == 0:
        return out
    order = keep[np.argsort(p[keep], kind="stable")]
    m = len(order)
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out[order] = adjusted
    return out


def holm_tarone(p: np.ndarray, smallest: np.ndarray, alpha: float = ALPHA) -> tuple[np.ndarray, np.ndarray, int]:
    """(Holm-adjusted p over the testable hypotheses, testable mask, Tarone's K). Untestable ones get NaN."""
    testable, k = tarone_level(smallest, alpha)
    return holm(np.where(testable, p, np.nan)), testable, k


# ---------------------------------------------------------------- intervals and effect sizes


def jeffreys_interval(k: np.ndarray, n: np.ndarray, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Equal-tailed Jeffreys interval of k successes in n trials (Beta(k+1/2, n-k+1/2)); lower 0 at k = 0, upper 1 at k = n.

    Vectorised; NaN where n is 0. Every interval contains k/n (checked)."""
    k, n = np.asarray(k, float), np.asarray(n, float)
    tail = (1 - level) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        lower = np.where(k <= 0, 0.0, stats.beta.ppf(tail, k + 0.5, n - k + 0.5))
        upper = np.where(k >= n, 1.0, stats.beta.ppf(1 - tail, k + 0.5, n - k + 0.5))
        share = k / n
    empty = n <= 0
    lower, upper, share = np.where(empty, np.nan, lower), np.where(empty, np.nan, upper), np.where(empty, np.nan, share)
    for s, lo, hi in zip(np.ravel(share), np.ravel(lower), np.ravel(upper)):
        check_contains(s, lo, hi, "Jeffreys interval")
    return lower, upper


def bootstrap_means(values: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = SEED) -> Optional[np.ndarray]:
    """Means of ``resamples`` bootstrap resamples of the rows (units) of ``values``; None for fewer than 2 units."""
    values = np.asarray(values, float)
    if len(values) < 2:
        return None
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(len(values), np.full(len(values), 1 / len(values)), size=resamples) / len(values)
    return weights @ values


def percentile_interval(samples: np.ndarray, estimate, level: float = LEVEL, what: str = "bootstrap interval") -> tuple:
    """The equal-tailed percentile interval of ``samples`` (along axis 0), checked to contain ``estimate``."""
    tail = (1 - level) / 2 * 100
    lower, upper = np.nanpercentile(samples, tail, axis=0), np.nanpercentile(samples, 100 - tail, axis=0)
    for e, lo, hi in zip(np.ravel(estimate), np.ravel(lower), np.ravel(upper)):
        check_contains(float(e), float(lo), float(hi), what)
    return lower, upper


def mean_interval(values: np.ndarray, level: float = LEVEL, seed: int = SEED) -> tuple[float, float, float]:
    """(mean, lower, upper) of a 1-D sample: percentile bootstrap over its units; NaN bounds for fewer than 2 units."""
    values = np.asarray(values, float)
    if len(values) == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(values.mean())
    boot = bootstrap_means(values[:, None], seed=seed)
    if boot is None:
        return mean, float("nan"), float("nan")
    lower, upper = percentile_interval(boot[:, 0], mean, level, "mean")
    return mean, float(lower), float(upper)


def cohens_dz(differences: np.ndarray) -> float:
    """Standardised paired effect: mean / SD of the unit differences (NaN when undefined; inf-free)."""
    d = np.asarray(differences, float)
    if len(d) < 2:
        return float("nan")
    sd = d.std(ddof=1)
    return float(d.mean() / sd) if sd > 1e-12 else float("nan")


def spearman_brown(r: np.ndarray, factor: float = 2.0) -> np.ndarray:
    """Reliability of a measure ``factor`` times as long as one with reliability ``r`` (split-half: factor 2)."""
    r = np.asarray(r, float)
    return factor * r / (1 + (factor - 1) * r)


def js_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen-Shannon divergence in bits (0 = same, 1 = disjoint) along the last axis; inputs are renormalised."""
    p = np.asarray(p, float) / np.sum(p, axis=-1, keepdims=True)
    q = np.asarray(q, float) / np.sum(q, axis=-1, keepdims=True)
    m = (p + q) / 2

    def kl(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.sum(np.where(a > 0, a * np.log2(np.where(a > 0, a, 1) / np.where(b > 0, b, 1)), 0.0), axis=-1)

    return (kl(p, m) + kl(q, m)) / 2


def format_p(p: float) -> str:
    """A p-value as a researcher reads it: '< .001', '.016', 'NA'."""
    if p is None or not np.isfinite(p):
        return "NA"
    return "< .001" if p < 0.001 else f"{p:.3f}".lstrip("0") if p < 1 else "1"


def p_text(p: float, name: str = "p") -> str:
    """'p < .001' or 'p = .016' (``name`` replaces 'p', e.g. 'Holm p')."""
    text = format_p(p)
    return f"{name} {text}" if text.startswith("<") else f"{name} = {text}"
