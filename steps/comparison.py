"""Models beside people, cell by cell: the long human-vs-model table for R (and the report's side-by-side tables).

Pure functions over the analysis tables (one per study, every model) and the validated human
tables (:mod:`steps.human`); nothing here calls a model or reads a file. Units are those of
:mod:`steps.responses` and each row says which (``unit``, ``n``).

- Cells: Study 2 = goal x true state (12); Study 1 = access x observe (9).
- Study 2 options: the 8 utterances. Study 1 "bet": the belief that exactly k of 3 items
  have the property, normalised over k = 0..3 per response (humans: their bets; Experiment 1:
  the coded ``probability_k``; Experiment 2: the expected percentage ``state{k}_mean``).
- Human proportions (one trial per participant and cell, as in both designs): Jeffreys 95%
  interval, as Yoon et al. (2020) summarised theirs. Human mean bets, and human proportions
  where a participant has several trials in a cell: bootstrap over participants.
- Models: each item's responses in the cell are averaged first (Experiment 1 replications,
  repeated prompts); the cell value is the mean over items, its interval a bootstrap over items.
"""

from __future__ import annotations

from typing import Iterable, Optional

import numpy as np
import pandas as pd

from schemas.human import ComparisonRow
from steps import stats
from steps.responses import (
    STUDY1_CELLS,
    STUDY2_CELLS,
    STUDY_MEASURES,
    Responses,
    human_responses,
    model_sources,
    plural,
)

JEFFREYS_METHOD = "Jeffreys 95% interval over trials (one per participant)"


def unit_bootstrap_method(unit: str) -> str:
    """How a unit-bootstrap interval was computed, in words."""
    return f"bootstrap over {plural(unit)} ({stats.BOOTSTRAP_RESAMPLES} resamples, 95% percentile)"


def cell_label(study: int, cell: tuple) -> str:
    """A readable label of condition ``cell``: goal and state for Study 2, access and observe for Study 1."""
    return f"goal={cell[0]}, state={cell[1]}" if study == 2 else f"access={cell[0]}, observe={cell[1]}"


def study_cells(study: int) -> list[tuple]:
    """The condition cells of ``study`` in report order."""
    return STUDY2_CELLS if study == 2 else STUDY1_CELLS


def _cell_fields(study: int, cell: tuple) -> dict:
    if study == 2:
        return {"goal": cell[0], "state": int(cell[1]), "access": None, "observe": None}
    return {"goal": None, "state": None, "access": int(cell[0]), "observe": int(cell[1])}


def cell_estimates(responses: Responses, cell: tuple, seed: int = stats.SEED) -> Optional[dict]:
    """Value per option in ``cell`` with its 95% interval, the number of units and how the interval was computed.

    None when the cell has no responses. Proportions of one trial per participant: Jeffreys; anything else: the
    mean over units (each unit's responses averaged first) with a bootstrap over units."""
    mask = responses.mask(cell)
    if not mask.any():
        return None
    values, groups = responses.values[mask], responses.groups[mask].astype(str)
    names, index = np.unique(groups, return_inverse=True)
    if responses.choice and len(names) == len(groups):
        k, n = values.sum(axis=0), len(values)
        lower, upper = stats.jeffreys_interval(k, np.full(len(k), n))
        return {"value": k / n, "lower": lower, "upper": upper, "n": n, "units": len(names), "interval": JEFFREYS_METHOD}
    sums = np.zeros((len(names), values.shape[1]))
    np.add.at(sums, index, values)
    unit_means = sums / np.bincount(index)[:, None]
    value = unit_means.mean(axis=0)
    boot = stats.bootstrap_means(unit_means, seed=seed)
    if boot is None:
        nan = np.full(len(value), np.nan)
        return {"value": value, "lower": nan, "upper": nan, "n": len(names), "units": len(names), "interval": None}
    lower, upper = stats.percentile_interval(boot, value, what=f"cell mean over {plural(responses.unit)}")
    return {"value": value, "lower": lower, "upper": upper, "n": len(names), "units": len(names),
            "interval": unit_bootstrap_method(responses.unit)}


def _clip(value) -> Optional[float]:
    return None if value is None or not np.isfinite(value) else float(min(1.0, max(0.0, value)))


def summarise(responses: Responses, study: int, measure: str, cells: Iterable[tuple], source: str,
              experiment: Optional[str] = None, model: Optional[str] = None, seed: int = stats.SEED) -> list[dict]:
    """Long rows (see :class:`schemas.human.ComparisonRow`) of one source: per cell and option, n, value, interval."""
    rows = []
    for cell in cells:
        est = cell_estimates(responses, cell, seed)
        if est is None:
            continue
        participants = est["units"] if source == "human" else None
        for i, option in enumerate(responses.options):
            rows.append({"study": study, "measure": measure, "cell": cell_label(study, cell), **_cell_fields(study, cell),
                         "option": option, "source": source, "experiment": experiment, "model": model,
                         "unit": "participant trial" if est["interval"] == JEFFREYS_METHOD else responses.unit, "n": int(est["n"]),
                         "participants": participants, "value": _clip(est["value"][i]), "lower": _clip(est["lower"][i]),
                         "upper": _clip(est["upper"][i]), "interval": est["interval"] if np.isfinite(est["lower"][i]) else None})
    return rows


def comparison_rows(study: int, table: Optional[pd.DataFrame], human: Optional[pd.DataFrame], checks: Iterable[str] = ()) -> list[dict]:
    """All long rows of one study: humans (if given), then each model's Experiment 2 and 1 per measure.

    ``checks``: the Study 1 manipulation checks whose failing trials are left out (:mod:`steps.exclusions`)."""
    checks = tuple(checks) if study == 1 else ()
    cells = study_cells(study)
    rows: list[dict] = []
    for measure in STUDY_MEASURES[study]:
        people = human_responses(study, human, measure, checks)
        if people is not None:
            rows += summarise(people, study, measure, cells, "human")
        for (model, experiment), responses in model_sources(table, study, measure, checks).items():
            rows += summarise(responses, study, measure, cells, "model", experiment, model)
    return rows


def comparison_frame(rows: list[dict]) -> pd.DataFrame:
    """``rows`` as a frame with exactly :class:`ComparisonRow`'s columns (validated)."""
    for row in rows:
        ComparisonRow.model_validate(row)
    return pd.DataFrame(rows, columns=list(ComparisonRow.model_fields))
