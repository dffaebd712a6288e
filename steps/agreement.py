"""How close a model's distributions are to the humans', with the yardsticks needed to read the numbers.

For one measure over the condition cells both sources have:

- **Divergence**: mean Jensen-Shannon divergence (bits; 0 = same distribution) over cells.
  Sampling noise only adds divergence, so the raw value is biased upward; the bootstrap
  bias-corrected value (2 x raw - median of the resamples) is shown beside it, with the basic
  bootstrap 95% interval (which is the interval for the corrected value and contains it).
- **Correlation**: Pearson r over cells x options, the same correction and interval on
  Fisher's z scale.
- Resampling: human participants and, for a model, its items (Study 1 stories, Study 2
  scenario items), independently, 2,000 times.
- **Noise ceiling**: split the participants at random into halves (200 splits); the halves'
  correlation, Spearman-Brown corrected to the full sample, is the humans' reliability
  rho; a model equal to the true human distributions would correlate about sqrt(rho) with
  these data. The halves' divergence, scaled to the full sample (x n1 n2 / n^2 per cell,
  since noise divergence shrinks as 1/n), is the divergence such a perfect model would
  still show: the floor.
- **Baselines** on the same scale: uniform (every option equally likely) and blind (the
  humans' own distribution pooled over the first factor: goal-blind, state only, for
  Study 2; access-blind, stated number only, for Study 1).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from steps import stats
from steps.responses import Responses

SPLITS = 200


def _ratio(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts[..., None]


def masked_correlations(x: np.ndarray, y: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Pearson correlation of x and y over the ``mask``ed entries, per first-axis slice (NaN where undefined)."""
    x, y, w = x.reshape(len(x), -1), y.reshape(len(y), -1), mask.reshape(len(mask), -1).astype(float)
    n = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        x0, y0 = np.where(w > 0, x, 0), np.where(w > 0, y, 0)
        dx = x0 - (x0.sum(axis=1) / n)[:, None]
        dy = y0 - (y0.sum(axis=1) / n)[:, None]
        cov, vx, vy = (w * dx * dy).sum(axis=1), (w * dx * dx).sum(axis=1), (w * dy * dy).sum(axis=1)
        r = cov / np.sqrt(vx * vy)
    return np.where((n >= 3) & (vx > 1e-15) & (vy > 1e-15), r, np.nan)


def _mean_js(h: np.ndarray, m: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Mean JS divergence over the present cells, per resample (h, m: resamples x cells x options)."""
    per_cell = np.where(present, stats.js_divergence(np.where(present[..., None], h, 1.0), np.where(present[..., None], m, 1.0)),
                        np.nan)
    with np.errstate(invalid="ignore"):
        return np.nanmean(per_cell, axis=-1)


def _corrected(raw: float, boot: np.ndarray, what: str) -> tuple[float, float, float]:
    """(bias-corrected estimate, basic bootstrap interval) of ``raw`` from its resamples ``boot``; NaN when undefined."""
    boot = boot[np.isfinite(boot)]
    if not np.isfinite(raw) or len(boot) < 10:
        return float("nan"), float("nan"), float("nan")
    q_lo, centre, q_hi = np.percentile(boot, [2.5, 50, 97.5])  # the median, not the mean: a few degenerate resamples
    estimate, lower, upper = 2 * raw - centre, 2 * raw - q_hi, 2 * raw - q_lo  # (r = +-1) cannot pull it out of its interval
    stats.check_contains(estimate, lower, upper, what)
    return float(estimate), float(lower), float(upper)


def _z(r: np.ndarray) -> np.ndarray:
    return np.arctanh(np.clip(r, -1 + 1e-12, 1 - 1e-12))


def _model_side(model, cells: list[tuple], resamples: int, seed: int) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """(per-cell model distribution, resampled ones or None): a Responses is resampled over its items, an array is fixed."""
    if not isinstance(model, Responses):
        return np.asarray(model, float), None
    _, item_means = model.unit_means(cells)
    present = np.isfinite(item_means[..., 0])
    filled = np.where(present[..., None], item_means, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        point = filled.sum(axis=0) / present.sum(axis=0)[:, None]
    n_items = len(item_means)
    if n_items < 2:
        return point, None
    weights = np.random.default_rng(seed + 1).multinomial(n_items, np.full(n_items, 1 / n_items), size=resamples).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = np.einsum("bi,ico->bco", weights, filled) / (weights @ present)[..., None]
    return point, boot


def agreement(human: Responses, model, cells: list[tuple], seed: int = stats.SEED,
              resamples: int = stats.BOOTSTRAP_RESAMPLES) -> dict:
    """Divergence and correlation of ``model`` (a model's Responses, resampled over items, or a fixed cells x options
    array such as a baseline) against ``human`` over the cells both have: raw, bias-corrected, basic 95% intervals."""
    _, sums, counts = human.unit_sums(cells)
    h = _ratio(sums.sum(axis=0), counts.sum(axis=0))
    m, m_boot = _model_side(model, cells, resamples, seed)
    shared = np.isfinite(h[:, 0]) & np.isfinite(m[:, 0])
    out: dict[str, float] = {"cells": int(shared.sum())}
    keys = ("js_raw", "js_corrected", "js_lower", "js_upper", "r_raw", "r_corrected", "r_lower", "r_upper")
    out.update({k: float("nan") for k in keys})
    if not shared.any():
        return out
    sums, counts, h, m = sums[:, shared], counts[:, shared], h[shared], m[shared]
    out["js_raw"] = float(np.mean(stats.js_divergence(h, m)))
    out["r_raw"] = float(masked_correlations(h[None], m[None], np.ones((1, *h.shape), bool))[0])
    n_people = len(sums)
    if n_people < 2:
        return out
    weights = np.random.default_rng(seed).multinomial(n_people, np.full(n_people, 1 / n_people), size=resamples).astype(float)
    boot_counts = weights @ counts
    boot_h = _ratio(np.einsum("bp,pco->bco", weights, sums), boot_counts)
    boot_m = np.broadcast_to(m, boot_h.shape) if m_boot is None else m_boot[:, shared]
    present = (boot_counts > 0) & np.isfinite(boot_m[..., 0])
    js = _mean_js(boot_h, boot_m, present)
    r = masked_correlations(boot_h, boot_m, np.broadcast_to(present[..., None], boot_h.shape))
    out["js_corrected"], out["js_lower"], out["js_upper"] = _corrected(out["js_raw"], js, "bias-corrected divergence")
    if np.isfinite(out["r_raw"]):
        z_est, z_lo, z_hi = _corrected(float(_z(np.array(out["r_raw"]))), _z(r), "corrected r (Fisher z)")
        out["r_corrected"], out["r_lower"], out["r_upper"] = (float(np.tanh(v)) for v in (z_est, z_lo, z_hi))
    return out


def noise_ceiling(human: Responses, cells: list[tuple], splits: int = SPLITS, seed: int = stats.SEED) -> dict:
    """The humans' split-half yardsticks over ``splits`` random halvings of the participants.

    ``reliability``: mean split-half r over cells x options, Spearman-Brown corrected; ``r_ceiling``: its square root
    (what a model equal to the true human distributions would correlate with these data); ``js_floor``: the halves'
    mean divergence scaled to the full sample (what that perfect model's raw divergence would be)."""
    _, sums, counts = human.unit_sums(cells)
    n_people = len(sums)
    out: dict[str, float] = {"participants": n_people, "splits": splits, "reliability": float("nan"), "r_ceiling": float("nan"),
                             "js_floor": float("nan")}
    if n_people < 4:
        return out
    rng = np.random.default_rng(seed)
    order = np.argsort(rng.random((splits, n_people)), axis=1)
    first = np.zeros((splits, n_people))
    np.put_along_axis(first, order[:, : n_people // 2], 1.0, axis=1)
    counts_a, counts_b = first @ counts, (1 - first) @ counts
    half_a = _ratio(np.einsum("sp,pco->sco", first, sums), counts_a)
    half_b = _ratio(np.einsum("sp,pco->sco", 1 - first, sums), counts_b)
    present = (counts_a > 0) & (counts_b > 0)
    r = masked_correlations(half_a, half_b, np.broadcast_to(present[..., None], half_a.shape))
    total = counts_a + counts_b
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = counts_a * counts_b / total**2
    per_cell = np.where(present, stats.js_divergence(np.where(present[..., None], half_a, 1.0),
                                                      np.where(present[..., None], half_b, 1.0)) * scale, np.nan)
    with np.errstate(invalid="ignore"):
        js = np.nanmean(per_cell, axis=1)
    if np.isfinite(r).any():
        reliability = float(stats.spearman_brown(np.nanmean(r)))
        out["reliability"] = reliability
        out["r_ceiling"] = float(np.sqrt(reliability)) if reliability > 0 else float("nan")
    if np.isfinite(js).any():
        out["js_floor"] = float(np.nanmean(js))
    return out


def baselines(human: Responses, cells: list[tuple]) -> dict[str, np.ndarray]:
    """'uniform' and 'blind' per-cell distributions (cells x options) on the humans' scale.

    Blind pools the humans' responses over the cell's first factor, keeping the second: for Study 2 (goal, state)
    the goal-blind, state-only distribution; for Study 1 (access, observe) the access-blind one (stated number only)."""
    _, sums, counts = human.unit_sums(cells)
    cell_sums, cell_counts = sums.sum(axis=0), counts.sum(axis=0)
    second = np.array([c[1] for c in cells])
    pooled = np.zeros_like(cell_sums)
    for key in np.unique(second):
        same = second == key
        with np.errstate(invalid="ignore", divide="ignore"):
            pooled[same] = cell_sums[same].sum(axis=0) / cell_counts[same].sum()
    uniform = np.full_like(cell_sums, 1 / len(human.options))
    missing = cell_counts == 0
    return {"uniform": np.where(missing[:, None], np.nan, uniform), "blind": np.where(missing[:, None], np.nan, pooled)}
