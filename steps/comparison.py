"""Models against people: per-cell distributions with intervals, agreement, and Study 1's published findings.

Pure functions over the analysis tables (one per study, every model) and the validated
human tables (:mod:`steps.human`); nothing here calls a model or reads a file.

Conventions (the same in the report and in the long table for R):

- Cells: Study 2 = goal x true state (12); Study 1 = access x observe (9).
- Study 2 options: the 8 utterances. Study 1 "bet": the belief that exactly k of 3 items
  have the property, normalised over k = 0..3 per trial (humans: their bets; Experiment 1:
  the coded ``probability_k``; Experiment 2: the expected percentage ``state{k}_mean``).
- Human proportions: Bayesian binomial, the 95% equal-tailed interval of Beta(1+k, 1+n-k)
  (uniform prior). Human mean bets: bootstrap over participants. Model Experiment 1 shares:
  Bayesian binomial over coded answers. Model Experiment 2 means: bootstrap over prompts.
- Experiment 2 is deterministic per prompt, so rows with the same prompt (participants
  who saw the same story and condition) count once: ``n`` is the number of distinct prompts.
- Agreement per model: mean Jensen-Shannon divergence (bits) over the cells both have,
  and Pearson correlation over all cell x option values; 95% percentile intervals by
  resampling human participants (the model side held fixed). Sampling noise only adds
  divergence, so a divergence's interval sits above its point estimate when the human
  cells are small: read it as the spread, not as a bias-corrected range.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product
from typing import Any, Iterable, Optional

import numpy as np
import pandas as pd
from scipy import stats

from schemas.human import ComparisonRow
from schemas.inputs import Study1Input, Study2Input
from schemas.probabilities import ASSESSMENTS, FRAMES, STATES
from steps.parse_answers import canonical_utterance

UTTERANCES = [canonical_utterance("was" if f == "was" else "wasn't", a) for f in FRAMES for a in ASSESSMENTS]
JOINT_COLUMNS = [f"prob_{f}_{a}" for f in FRAMES for a in ASSESSMENTS]
GOALS = ("informational", "social", "both")
STUDY2_CELLS = [(g, s) for g in GOALS for s in STATES]
STUDY1_CELLS = [(a, o) for a in (1, 2, 3) for o in range(a + 1)]
BET_OPTIONS = [str(k) for k in STATES]
BOOTSTRAP_RESAMPLES = 1000
LEVEL = 0.95
SEED = 20130501  # fixed: the same tables always give the same intervals
# Input columns that decide a prompt (not who saw it, nor the materials' Utterance, which no prompt shows).
PROMPT_COLUMNS = {1: [c for c in Study1Input.model_fields if c != "participant_id"],
                  2: [c for c in Study2Input.model_fields if c not in ("Participant_ID", "Utterance")]}
BETA_METHOD = "Bayesian binomial: 95% equal-tailed interval of Beta(1+k, 1+n-k)"
PARTICIPANT_BOOT = f"bootstrap over participants ({BOOTSTRAP_RESAMPLES} resamples, 95% percentile)"
PROMPT_BOOT = f"bootstrap over distinct prompts ({BOOTSTRAP_RESAMPLES} resamples, 95% percentile)"
ROW_BOOT = f"bootstrap over coded answers ({BOOTSTRAP_RESAMPLES} resamples, 95% percentile)"


def beta_interval(k: float, n: float, level: float = LEVEL) -> tuple[Optional[float], Optional[float]]:
    """Equal-tailed ``level`` interval of Beta(1+k, 1+n-k); (None, None) when n is 0."""
    if n <= 0:
        return None, None
    tail = (1 - level) / 2
    return float(stats.beta.ppf(tail, 1 + k, 1 + n - k)), float(stats.beta.ppf(1 - tail, 1 + k, 1 + n - k))


def js_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen-Shannon divergence in bits (0 = same, 1 = disjoint) along the last axis; inputs are renormalised."""
    p = np.asarray(p, float) / np.sum(p, axis=-1, keepdims=True)
    q = np.asarray(q, float) / np.sum(q, axis=-1, keepdims=True)
    m = (p + q) / 2

    def kl(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.sum(np.where(a > 0, a * np.log2(np.where(a > 0, a, 1) / np.where(b > 0, b, 1)), 0.0), axis=-1)

    return (kl(p, m) + kl(q, m)) / 2


def _bootstrap_mean(values: np.ndarray, rng: np.random.Generator) -> tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """Percentile interval of the mean of ``values`` (rows = units, columns = options); None for fewer than 2 units."""
    if len(values) < 2:
        return None, None
    picks = rng.integers(0, len(values), size=(BOOTSTRAP_RESAMPLES, len(values)))
    means = values[picks].mean(axis=1)
    tail = (1 - LEVEL) / 2 * 100
    return np.percentile(means, tail, axis=0), np.percentile(means, 100 - tail, axis=0)


def _clip(value) -> Optional[float]:
    return None if value is None or not np.isfinite(value) else float(min(1.0, max(0.0, value)))


# ---------------------------------------------------------------- per-unit data in one shape


@dataclass
class Responses:
    """Responses of one source for one measure: one row per unit (a trial, a coded answer or a prompt).

    ``values`` holds, per unit, a distribution over ``options`` (one-hot for a choice);
    ``cells`` the unit's condition cell; ``groups`` the participant (bootstrap unit) or None.
    """

    options: list[str]
    cells: list[tuple]
    values: np.ndarray
    groups: Optional[np.ndarray] = None

    def in_cell(self, cell: tuple) -> np.ndarray:
        """The rows of ``values`` whose unit is in condition ``cell`` (no rows when none is)."""
        return self.values[[c == cell for c in self.cells]] if len(self.cells) else self.values[:0]


def _one_hot(choices: pd.Series, options: list[str]) -> np.ndarray:
    return np.array([[1.0 if c == o else 0.0 for o in options] for c in choices]).reshape(len(choices), len(options))


def _normalised(frame: pd.DataFrame, columns: list[str]) -> tuple[pd.DataFrame, np.ndarray]:
    values = frame[columns].astype(float)
    ok = values.notna().all(axis=1) & (values.sum(axis=1) > 0)
    kept = values[ok].to_numpy()
    return frame[ok], kept / kept.sum(axis=1, keepdims=True)


def _distinct_prompts(table: pd.DataFrame, study: int) -> pd.DataFrame:
    """One row per (model, prompt): Experiment 2 gives the same numbers for the same prompt."""
    return table.drop_duplicates(["model_name", *[c for c in PROMPT_COLUMNS[study] if c in table.columns]])


def human2_responses(human: pd.DataFrame) -> Responses:
    """Study 2 human trials as one-hot utterance choices per goal x state."""
    cells = list(zip(human.Goal_simplified, human.State_number.astype(int)))
    return Responses(UTTERANCES, cells, _one_hot(human.utterance, UTTERANCES), human.subid.to_numpy())


def human1_responses(human: pd.DataFrame, measure: str) -> Optional[Responses]:
    """Study 1 human trials for ``measure`` (bet, prior, knowledge); None when the file has no such responses."""
    if measure == "bet":
        part = human[human.bet_0.notna()] if "bet_0" in human else human[:0]
        values = part[[f"bet_{k}" for k in STATES]].to_numpy(float)
        options = BET_OPTIONS
    elif measure == "prior":
        part = human[human.prior.notna()] if "prior" in human else human[:0]
        options = BET_OPTIONS
        values = _one_hot(part.prior.astype(int).astype(str), options)
    else:
        part = human[human.knowledge.notna()] if "knowledge" in human else human[:0]
        options = ["yes", "no"]
        values = _one_hot(part.knowledge, options)
    if part.empty:
        return None
    return Responses(options, list(zip(part.access.astype(int), part.observe.astype(int))), values, part.subid.to_numpy())


def model_responses(table: pd.DataFrame, study: int, measure: str, experiment: str) -> Optional[Responses]:
    """One model's analysis rows for ``measure`` from Experiment 1 (coded answers) or 2 (probabilities)."""
    if study == 2:
        cell_of = lambda f: list(zip(f.Goal_simplified.astype(str), f.State_number.astype(int)))  # noqa: E731
        if experiment == "exp1_coded":
            coded = table[table.response_cleaned.isin(UTTERANCES)]
            return Responses(UTTERANCES, cell_of(coded), _one_hot(coded.response_cleaned, UTTERANCES)) if len(coded) else None
        part, values = _normalised(_distinct_prompts(table, study), JOINT_COLUMNS)
        return Responses(UTTERANCES, cell_of(part), values) if len(part) else None
    cell_of = lambda f: list(zip(f.access.astype(int), f.observe.astype(int)))  # noqa: E731
    if measure == "bet":
        columns = [f"probability_{k}" for k in STATES] if experiment == "exp1_coded" else [f"state{k}_mean" for k in STATES]
        source = table if experiment == "exp1_coded" else _distinct_prompts(table, study)
        if not set(columns) <= set(source.columns):
            return None
        part, values = _normalised(source, columns)
        return Responses(BET_OPTIONS, cell_of(part), values) if len(part) else None
    if measure == "prior":
        if experiment != "exp1_coded":
            return None  # Experiment 2 does not score the prior question
        part = table[table.Prior_A.notna()]
        return Responses(BET_OPTIONS, cell_of(part), _one_hot(part.Prior_A.astype(int).astype(str), BET_OPTIONS)) if len(part) else None
    if experiment == "exp1_coded":
        part = table[table.Knowledge_A.isin(["yes", "no"])]
        return Responses(["yes", "no"], cell_of(part), _one_hot(part.Knowledge_A, ["yes", "no"])) if len(part) else None
    part, values = _normalised(_distinct_prompts(table, study), ["prob_knowledge_yes", "prob_knowledge_no"])
    return Responses(["yes", "no"], cell_of(part), values) if len(part) else None


# ---------------------------------------------------------------- per-cell summaries


def cell_label(study: int, cell: tuple) -> str:
    """A readable label of condition ``cell``: goal and state for Study 2, access and observe for Study 1."""
    return f"goal={cell[0]}, state={cell[1]}" if study == 2 else f"access={cell[0]}, observe={cell[1]}"


def _cell_fields(study: int, cell: tuple) -> dict:
    if study == 2:
        return {"goal": cell[0], "state": int(cell[1]), "access": None, "observe": None}
    return {"goal": None, "state": None, "access": int(cell[0]), "observe": int(cell[1])}


def summarise(responses: Responses, study: int, measure: str, cells: Iterable[tuple], source: str,
              experiment: Optional[str] = None, model: Optional[str] = None, seed: int = SEED) -> list[dict]:
    """Long rows (see :class:`schemas.human.ComparisonRow`) of one source: per cell and option, n, value, interval."""
    rng = np.random.default_rng(seed)
    choice = measure in ("utterance", "prior", "knowledge") and not (experiment == "exp2_probabilities")
    rows = []
    for cell in cells:
        mask = np.array([c == cell for c in responses.cells], dtype=bool)
        values = responses.values[mask] if len(responses.cells) else responses.values[:0]
        n = len(values)
        if n == 0:
            continue
        participants = int(len(set(responses.groups[mask]))) if responses.groups is not None else None
        means = values.mean(axis=0)
        if choice:
            bounds = [beta_interval(k, n) for k in values.sum(axis=0)]
            method = BETA_METHOD
        elif responses.groups is not None:
            bounds, method = _group_bootstrap(values, responses.groups[mask], rng), PARTICIPANT_BOOT
        else:
            lows, highs = _bootstrap_mean(values, rng)
            bounds = list(zip(lows, highs)) if lows is not None and highs is not None else [(None, None)] * len(responses.options)
            method = PROMPT_BOOT if experiment == "exp2_probabilities" else ROW_BOOT
        for option, value, (low, high) in zip(responses.options, means, bounds):
            rows.append({"study": study, "measure": measure, "cell": cell_label(study, cell), **_cell_fields(study, cell),
                         "option": option, "source": source, "experiment": experiment, "model": model, "n": n,
                         "participants": participants, "value": _clip(value), "lower": _clip(low), "upper": _clip(high),
                         "interval": method if low is not None else None})
    return rows


def _group_bootstrap(values: np.ndarray, groups: np.ndarray, rng: np.random.Generator) -> list[tuple]:
    """Percentile interval of the trial mean when whole participants are resampled."""
    names, index = np.unique(groups, return_inverse=True)
    if len(names) < 2:
        return [(None, None)] * values.shape[1]
    sums = np.zeros((len(names), values.shape[1]))
    np.add.at(sums, index, values)
    counts = np.bincount(index, minlength=len(names)).astype(float)
    weights = rng.multinomial(len(names), np.full(len(names), 1 / len(names)), size=BOOTSTRAP_RESAMPLES)
    means = (weights @ sums) / (weights @ counts)[:, None]
    tail = (1 - LEVEL) / 2 * 100
    return list(zip(np.percentile(means, tail, axis=0), np.percentile(means, 100 - tail, axis=0)))


# ---------------------------------------------------------------- agreement


def agreement(human: Responses, model: Responses, cells: list[tuple], seed: int = SEED) -> dict:
    """Mean JS divergence and correlation of ``model`` against ``human`` over shared cells, with participant-bootstrap intervals."""
    shared = [c for c in cells if human.in_cell(c).shape[0] and model.in_cell(c).shape[0]]
    out = {"cells": len(shared), "js_divergence": np.nan, "js_lower": np.nan, "js_upper": np.nan,
           "correlation": np.nan, "corr_lower": np.nan, "corr_upper": np.nan}
    if not shared:
        return out
    if human.groups is None:
        raise ValueError("agreement needs the human responses' participants (the bootstrap unit)")
    m = np.array([model.in_cell(c).mean(axis=0) for c in shared])
    names, index = np.unique(human.groups, return_inverse=True)
    cell_index = {c: i for i, c in enumerate(shared)}
    sums = np.zeros((len(names), len(shared), len(human.options)))
    counts = np.zeros((len(names), len(shared)))
    for unit, (cell, value) in enumerate(zip(human.cells, human.values)):
        if cell in cell_index:
            sums[index[unit], cell_index[cell]] += value
            counts[index[unit], cell_index[cell]] += 1
    h = sums.sum(axis=0) / counts.sum(axis=0)[:, None]
    out["js_divergence"] = float(np.mean(js_divergence(h, m)))
    out["correlation"] = _correlation(h.ravel(), m.ravel())
    if len(names) >= 2:
        rng = np.random.default_rng(seed)
        weights = rng.multinomial(len(names), np.full(len(names), 1 / len(names)), size=BOOTSTRAP_RESAMPLES)
        boot_sums = np.einsum("bs,sco->bco", weights, sums)
        boot_counts = np.einsum("bs,sc->bc", weights, counts)
        with np.errstate(invalid="ignore", divide="ignore"):
            boot_h = boot_sums / boot_counts[..., None]
        present = boot_counts > 0  # a resample may miss every participant of a cell: that cell is left out of it
        per_cell = np.where(present, js_divergence(np.where(present[..., None], boot_h, 1.0), m), np.nan)
        jsd = np.nanmean(per_cell, axis=1)
        corr = _masked_correlations(boot_h, np.broadcast_to(m, boot_h.shape), np.broadcast_to(present[..., None], boot_h.shape))
        tail = (1 - LEVEL) / 2 * 100
        out["js_lower"], out["js_upper"] = np.nanpercentile(jsd, tail), np.nanpercentile(jsd, 100 - tail)
        if np.isfinite(corr).any():
            out["corr_lower"], out["corr_upper"] = np.nanpercentile(corr, tail), np.nanpercentile(corr, 100 - tail)
    return out


def _masked_correlations(x: np.ndarray, y: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Pearson correlation of x and y over the ``mask``ed entries, per first-axis slice (NaN where undefined)."""
    x, y, w = x.reshape(len(x), -1), y.reshape(len(y), -1), mask.reshape(len(mask), -1).astype(float)
    n = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        dx = np.where(w > 0, x, 0) - (np.where(w > 0, x, 0).sum(axis=1) / n)[:, None]
        dy = np.where(w > 0, y, 0) - (np.where(w > 0, y, 0).sum(axis=1) / n)[:, None]
        cov, vx, vy = (w * dx * dy).sum(axis=1), (w * dx * dx).sum(axis=1), (w * dy * dy).sum(axis=1)
        r = cov / np.sqrt(vx * vy)
    return np.where((n >= 3) & (vx > 1e-15) & (vy > 1e-15), r, np.nan)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3 or np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


# ---------------------------------------------------------------- Goodman & Stuhlmueller (2013)


@dataclass(frozen=True)
class Finding:
    """A paired comparison the paper reports for one access x observe cell: bet on ``higher`` vs bet on ``lower`` state."""

    statement: str
    access: int
    observe: int
    higher: int
    lower: int
    expected_greater: bool

    @property
    def paper(self) -> str:
        """The relation between the two bets that the paper reports, in words."""
        relation = ">" if self.expected_greater else "not >"
        return f"bet on {self.higher} {relation} bet on {self.lower}"


GS2013_FINDINGS = (
    Finding("'two', full access (3 of 3 seen)", 3, 2, 2, 3, True),
    Finding("'one', full access (3 of 3 seen)", 3, 1, 1, 2, True),
    Finding("'one', full access (3 of 3 seen)", 3, 1, 1, 3, True),
    Finding("'two', partial access (2 of 3 seen)", 2, 2, 2, 3, False),
    Finding("'one', partial access (1 of 3 seen)", 1, 1, 1, 2, False),
    Finding("'one', partial access (1 of 3 seen)", 1, 1, 1, 3, False),
    Finding("'one', partial access (2 of 3 seen)", 2, 1, 1, 3, True),
    Finding("'one', partial access (2 of 3 seen)", 2, 1, 1, 2, False),
)
ALPHA = 0.05
MIN_TRIALS = 3
_EXACT_UP_TO = 14
_RANDOM_FLIPS = 20000


def sign_flip_p(differences: np.ndarray, seed: int = SEED) -> float:
    """One-sided p-value that the mean paired difference is > 0 (sign-flip permutation; exact up to 14 pairs)."""
    d = np.asarray(differences, float)
    observed = d.mean()
    if np.all(d == 0):
        return 1.0
    if len(d) <= _EXACT_UP_TO:
        signs = np.array(list(product((1.0, -1.0), repeat=len(d))))
        return float(np.mean((signs * d).mean(axis=1) >= observed - 1e-12))
    signs = np.random.default_rng(seed).choice((1.0, -1.0), size=(_RANDOM_FLIPS, len(d)))
    return float((np.sum((signs * d).mean(axis=1) >= observed - 1e-12) + 1) / (_RANDOM_FLIPS + 1))


def check_finding(finding: Finding, bets: Responses, seed: int = SEED) -> dict:
    """The paired test of ``finding`` on one source's normalised bets: mean difference, CI, p, verdict."""
    values = bets.in_cell((finding.access, finding.observe))
    d = values[:, finding.higher] - values[:, finding.lower] if len(values) else np.zeros(0)
    row: dict[str, Any] = {"n": len(d), "mean_difference": float(d.mean()) if len(d) else np.nan, "ci_lower": np.nan, "ci_upper": np.nan,
           "p_one_sided": np.nan}
    if len(d) < MIN_TRIALS:
        row["verdict"] = f"not testable (n={len(d)} < {MIN_TRIALS})"
        return row
    low, high = _bootstrap_mean(d[:, None], np.random.default_rng(seed))
    assert low is not None and high is not None  # MIN_TRIALS >= 2 units
    row["ci_lower"], row["ci_upper"] = float(low[0]), float(high[0])
    p = sign_flip_p(d, seed)
    row["p_one_sided"] = p
    greater = p < ALPHA
    row["verdict"] = "reproduced" if greater == finding.expected_greater else "not reproduced"
    return row


def findings_table(sources: dict[str, Responses]) -> pd.DataFrame:
    """Every published comparison for every source (name -> normalised bets), as in the report."""
    rows = []
    for finding in GS2013_FINDINGS:
        for name, bets in sources.items():
            rows.append({"statement": finding.statement, "access": finding.access, "observe": finding.observe,
                         "paper (Goodman & Stuhlmueller 2013)": finding.paper, "source": name, **check_finding(finding, bets)})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- the long table for R


STUDY_MEASURES = {1: ("bet", "prior", "knowledge"), 2: ("utterance",)}


def human_responses(study: int, human: Optional[pd.DataFrame], measure: str) -> Optional[Responses]:
    """The human file's per-unit responses for ``measure``; None when there is no human file."""
    if human is None:
        return None
    return human2_responses(human) if study == 2 else human1_responses(human, measure)


def comparison_rows(study: int, table: Optional[pd.DataFrame], human: Optional[pd.DataFrame]) -> list[dict]:
    """All long rows of one study: humans (if given), then each model's Experiment 1 and 2 per measure."""
    cells = STUDY2_CELLS if study == 2 else STUDY1_CELLS
    rows: list[dict] = []
    for measure in STUDY_MEASURES[study]:
        people = human_responses(study, human, measure)
        if people is not None:
            rows += summarise(people, study, measure, cells, "human")
        if table is None:
            continue
        for model, part in table.groupby("model_name", observed=True, sort=True):
            for experiment in ("exp1_coded", "exp2_probabilities"):
                responses = model_responses(part, study, measure, experiment)
                if responses is not None:
                    rows += summarise(responses, study, measure, cells, "model", experiment, str(model))
    return rows


def comparison_frame(rows: list[dict]) -> pd.DataFrame:
    """``rows`` as a frame with exactly :class:`ComparisonRow`'s columns (validated)."""
    for row in rows:
        ComparisonRow.model_validate(row)
    return pd.DataFrame(rows, columns=list(ComparisonRow.model_fields))
