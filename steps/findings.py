"""Published findings as contrasts over condition cells, tested per source with verdicts that mean what they say.

A finding is a linear contrast of a source's mean responses: sum of weight x (mean response
to ``option`` in ``cell``), computed per unit (participant for humans, item for models; see
:mod:`steps.responses`), so every test is paired within the unit. Kinds:

- ``greater``: the paper found the contrast above 0. *Reproduced* when its one-sided test
  is significant after correction and the 95% interval of the effect excludes 0; *not
  reproduced* when the data show the effect below the equivalence margin (one-sided test of
  effect < margin, the upper half of TOST); otherwise *inconclusive*.
- ``not greater``: the paper found the difference no longer greater. *Reproduced* when the
  data show it below +margin (the upper one-sided test of TOST; the lower half is shown but
  not required, because "not greater" includes a reversal, as Goodman & Stuhlmueller found)
  **and** the finding it presupposes (``requires``: the cancellation of a reading that was
  there) is reproduced; *not reproduced* when the data show it above +margin, or its
  premise is not reproduced; otherwise *inconclusive*.
- ``estimate``: shown with its effect size and a two-sided p, without a verdict.

Every test is an exact sign-flip test over units (:mod:`steps.stats`). Within one source all
tests of its findings form one family: Holm's correction after Tarone's screen, so a test
whose smallest attainable p cannot reach the corrected level is *not testable* (the reason
is printed, e.g. "6 stories: smallest attainable p = .016 > .0125").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

import numpy as np
import pandas as pd

from schemas.settings import AnalysisSettings
from steps import stats
from steps.responses import Responses, plural

Kind = Literal["greater", "not greater", "estimate"]
Term = tuple[tuple, str, float]  # (cell, option, weight)
VERDICTS = ("reproduced", "not reproduced", "inconclusive", "not testable")


@dataclass(frozen=True)
class Contrast:
    """One published finding: what is claimed, where the paper says so, and the contrast that tests it."""

    key: str
    statement: str
    paper: str
    kind: Kind
    terms: tuple[Term, ...]
    requires: Optional[str] = None


@dataclass
class SourceResult:
    """One source's unit values for every finding (for plots and ratios) and its findings table rows."""

    label: str
    unit: str
    human: bool
    rows: list[dict] = field(default_factory=list)
    values: dict[str, np.ndarray] = field(default_factory=dict)


def unit_values(contrasts: tuple[Contrast, ...], responses: Responses, cells: list[tuple]) -> dict[str, np.ndarray]:
    """Contrast key -> the contrast's value for every unit that has all the cells it needs (1-D, unit order)."""
    _, means = responses.unit_means(cells)
    cell_pos = {c: i for i, c in enumerate(cells)}
    option_pos = {o: i for i, o in enumerate(responses.options)}
    out = {}
    for contrast in contrasts:
        cols = means[:, [cell_pos[c] for c, _, _ in contrast.terms], [option_pos[o] for _, o, _ in contrast.terms]]
        weights = np.array([w for _, _, w in contrast.terms])
        complete = np.isfinite(cols).all(axis=1)
        out[contrast.key] = cols[complete] @ weights
    return out


def _plural(n: int, unit: str) -> str:
    return f"{n} {plural(unit, n)}"


def _tests(contrast: Contrast, d: np.ndarray, margin: float, seed: int) -> dict:
    """Point estimate, interval, effect size and the raw one-sided p-values of one finding for one source."""
    mean, lower, upper = stats.mean_interval(d, seed=seed)
    row = {"n": len(d), "effect": mean, "lower": lower, "upper": upper, "d_z": stats.cohens_dz(d), "p_claim": np.nan,
           "p_counter": np.nan, "p_tost_lower": np.nan, "p_two_sided": np.nan}
    if len(d) < 2:
        return row
    if contrast.kind == "greater":
        row["p_claim"], row["p_counter"] = stats.sign_flip_p(d, seed), stats.sign_flip_p(margin - d, seed)
    elif contrast.kind == "not greater":
        row["p_tost_lower"], row["p_claim"] = stats.tost(d, margin, seed)
        row["p_counter"] = stats.sign_flip_p(d - margin, seed)
    else:
        row["p_two_sided"] = min(1.0, 2 * min(stats.sign_flip_p(d, seed), stats.sign_flip_p(-d, seed)))
    return row


def evaluate(contrasts: tuple[Contrast, ...], responses: Responses, cells: list[tuple], label: str, human: bool,
             settings: AnalysisSettings, seed: int = stats.SEED) -> SourceResult:
    """Every finding of ``contrasts`` tested on one source, corrected within the source, with verdicts and reasons."""
    values = unit_values(contrasts, responses, cells)
    result = SourceResult(label, responses.unit, human, values=values)
    rows = [{"key": c.key, **_tests(c, values[c.key], settings.equivalence_margin, seed)} for c in contrasts]
    tested = [i for i, c in enumerate(contrasts) if c.kind != "estimate"]
    p = np.array([rows[i][k] for i in tested for k in ("p_claim", "p_counter")])
    smallest = np.array([stats.smallest_p(rows[i]["n"]) if rows[i]["n"] >= 2 else 1.0 for i in tested for _ in (0, 1)])
    adjusted, testable, k = stats.holm_tarone(p, smallest, settings.alpha)
    for j, i in enumerate(tested):
        rows[i].update(holm_claim=adjusted[2 * j], holm_counter=adjusted[2 * j + 1], testable=bool(testable[2 * j]),
                       level=settings.alpha / k)
    by_key: dict[str, str] = {}
    order = sorted(range(len(contrasts)), key=lambda i: contrasts[i].kind == "not greater")  # premises first
    for i in order:
        verdict, why = _verdict(contrasts[i], rows[i], responses.unit, settings, by_key)
        rows[i].update(verdict=verdict, why=why)
        by_key[contrasts[i].key] = verdict
    result.rows = rows
    return result


def _not_testable(row: dict, unit: str, alpha: float) -> str:
    n = row["n"]
    if n < 2:
        return f"{_plural(n, unit)} with every cell the contrast needs: no test"
    floor = stats.smallest_p(n)
    if floor > alpha:
        return f"{_plural(n, unit)}: smallest attainable p = {stats.format_p(floor)} > alpha = {alpha:g}"
    return (f"{_plural(n, unit)}: smallest attainable p = {stats.format_p(floor)} > {row['level']:.4f}, the level Holm's "
            "correction needs here")


def _verdict(contrast: Contrast, row: dict, unit: str, settings: AnalysisSettings, by_key: dict) -> tuple[str, str]:
    """(verdict, reason in words) of one finding for one source, given its corrected tests and its premise's verdict."""
    if contrast.kind == "estimate":
        return "estimate", f"two-sided {stats.p_text(row['p_two_sided'])} (no verdict: direction not stated by the paper)"
    if row["n"] < 2 or not row["testable"]:
        return "not testable", _not_testable(row, unit, settings.alpha)
    alpha, margin = settings.alpha, settings.equivalence_margin
    claim, counter = row["holm_claim"] <= alpha, row["holm_counter"] <= alpha
    if contrast.kind == "greater":
        if claim and row["lower"] > 0:
            return "reproduced", f"greater than 0: {stats.p_text(row['p_claim'])}, {stats.p_text(row['holm_claim'], 'Holm p')}"
        if counter:
            return "not reproduced", (f"shown below the margin {margin:g}: {stats.p_text(row['p_counter'])}, "
                                      f"{stats.p_text(row['holm_counter'], 'Holm p')}")
        return "inconclusive", f"neither shown greater than 0 nor below the margin {margin:g} after correction"
    if counter:
        return "not reproduced", (f"still greater, above the margin {margin:g}: {stats.p_text(row['p_counter'])}, "
                                  f"{stats.p_text(row['holm_counter'], 'Holm p')}")
    if not claim:
        return "inconclusive", f"not shown below the margin {margin:g} after correction"
    premise = by_key.get(contrast.requires, "reproduced") if contrast.requires else "reproduced"
    below = f"below the margin {margin:g}: {stats.p_text(row['p_claim'])}, {stats.p_text(row['holm_claim'], 'Holm p')}"
    if premise == "reproduced":
        return "reproduced", below
    if premise == "not reproduced":
        return "not reproduced", f"{below}; but no reading to lose: its cancellation ({contrast.requires}) is not reproduced"
    return "inconclusive", f"{below}; but its cancellation ({contrast.requires}) is {premise}"


def effect_ratio(model: np.ndarray, human: np.ndarray, seed: int = stats.SEED) -> tuple[float, float, float]:
    """(model effect / human effect, 95% interval) bootstrapping model units and human units independently.

    NaN when the human effect's interval includes 0 (a ratio to nothing) or a side has no units."""
    if len(model) == 0 or len(human) < 2:
        return float("nan"), float("nan"), float("nan")
    h_mean, h_low, h_high = stats.mean_interval(human, seed=seed)
    if not (h_low > 0 or h_high < 0):
        return float("nan"), float("nan"), float("nan")
    ratio = float(np.mean(model) / h_mean)
    m_boot, h_boot = stats.bootstrap_means(np.asarray(model, float)[:, None], seed=seed + 2), stats.bootstrap_means(
        np.asarray(human, float)[:, None], seed=seed + 3)
    if m_boot is None or h_boot is None:
        return ratio, float("nan"), float("nan")
    lower, upper = stats.percentile_interval(m_boot[:, 0] / h_boot[:, 0], ratio, what="effect ratio")
    return ratio, float(lower), float(upper)


def findings_frame(contrasts: tuple[Contrast, ...], results: list[SourceResult], paper_column: str) -> pd.DataFrame:
    """The findings table: one row per finding x source, with the human effect ratio for model sources."""
    human = next((r for r in results if r.human), None)
    rows = []
    for i, contrast in enumerate(contrasts):
        for result in results:
            row = result.rows[i]
            ratio = (effect_ratio(result.values[contrast.key], human.values[contrast.key])
                     if human is not None and not result.human else (np.nan, np.nan, np.nan))
            rows.append({"finding": contrast.statement, paper_column: contrast.paper, "kind": contrast.kind, "key": contrast.key,
                         "source": result.label, "unit": result.unit, "n": row["n"], "effect": row["effect"],
                         "lower": row["lower"], "upper": row["upper"], "d_z": row["d_z"], "p": row.get("p_claim", np.nan),
                         "p_holm": row.get("holm_claim", np.nan), "p_tost_lower": row["p_tost_lower"],
                         "p_two_sided": row["p_two_sided"], "ratio": ratio[0], "ratio_lower": ratio[1], "ratio_upper": ratio[2],
                         "verdict": row["verdict"], "why": row["why"]})
    return pd.DataFrame(rows)
