"""Per-response data of one source in one shape, with its unit of analysis: who counts as one independent observation.

Units (stated in every table of the report):

- humans: the **participant** (``subid``); a participant's trials in one cell are averaged
  before anything is tested or resampled.
- models: the **item** -- Study 1: the story (``story_shortname``) within an access x observe
  cell; Study 2: the scenario item (``Domain``) within a goal x state cell. Experiment 1
  replications and rows that repeat a prompt are samples of the same item and are averaged
  within it; Experiment 2 is deterministic per prompt, so each distinct prompt counts once
  (prompts differing only in ``participant_id``/``Participant_ID``, or the materials'
  ``Utterance`` column that no prompt shows, are one prompt).

Study 1 rows can be filtered by the researchers' manipulation checks (:mod:`steps.exclusions`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

import numpy as np
import pandas as pd

from schemas.inputs import Study1Input, Study2Input
from schemas.probabilities import ASSESSMENTS, FRAMES, STATES
from steps import exclusions
from steps.parse_answers import canonical_utterance

UTTERANCES = [canonical_utterance("was" if f == "was" else "wasn't", a) for f in FRAMES for a in ASSESSMENTS]
NEGATED = [u for u in UTTERANCES if u.startswith("It wasn't")]
POSITIVE = ["It was good", "It was amazing"]
JOINT_COLUMNS = [f"prob_{f}_{a}" for f in FRAMES for a in ASSESSMENTS]
GOALS = ("informational", "social", "both")
STUDY2_CELLS = [(g, s) for g in GOALS for s in STATES]
STUDY1_CELLS = [(a, o) for a in (1, 2, 3) for o in range(a + 1)]
BET_OPTIONS = [str(k) for k in STATES]
EXPERIMENTS = ("exp2_probabilities", "exp1_coded")
STUDY_MEASURES = {1: ("bet", "prior", "knowledge"), 2: ("utterance",)}
ITEM_COLUMN = {1: "story_shortname", 2: "Domain"}
ITEM_UNIT = {1: "story", 2: "scenario item"}
# Input columns that decide a prompt (not who saw it, nor the materials' Utterance, which no prompt shows).
PROMPT_COLUMNS = {1: [c for c in Study1Input.model_fields if c != "participant_id"],
                  2: [c for c in Study2Input.model_fields if c not in ("Participant_ID", "Utterance")]}


@dataclass
class Responses:
    """Responses of one source for one measure: one row per response (a trial, a coded answer or a prompt).

    ``values`` holds, per row, a distribution over ``options`` (one-hot for a choice); ``cells`` the row's
    condition cell; ``groups`` the row's unit (participant or item); ``unit`` what a unit is, in words;
    ``choice`` whether each row is one categorical answer (proportions get binomial intervals).
    """

    options: list[str]
    cells: list[tuple]
    values: np.ndarray
    groups: np.ndarray
    unit: str
    choice: bool = False

    def in_cell(self, cell: tuple) -> np.ndarray:
        """The rows of ``values`` whose response is in condition ``cell`` (no rows when none is)."""
        return self.values[self.mask(cell)]

    def mask(self, cell: tuple) -> np.ndarray:
        """Boolean row mask of condition ``cell``."""
        return np.fromiter((c == cell for c in self.cells), bool, len(self.cells))

    def unit_sums(self, cells: list[tuple]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(unit names, sums units x cells x options, response counts units x cells) over ``cells`` (others left out)."""
        names, unit_index = np.unique(self.groups.astype(str), return_inverse=True)
        position = {c: i for i, c in enumerate(cells)}
        cell_index = np.fromiter((position.get(c, -1) for c in self.cells), int, len(self.cells))
        inside = cell_index >= 0
        sums = np.zeros((len(names), len(cells), len(self.options)))
        counts = np.zeros((len(names), len(cells)))
        np.add.at(sums, (unit_index[inside], cell_index[inside]), self.values[inside])
        np.add.at(counts, (unit_index[inside], cell_index[inside]), 1)
        return names, sums, counts

    def unit_means(self, cells: list[tuple]) -> tuple[np.ndarray, np.ndarray]:
        """(unit names, array units x cells x options of each unit's mean response in each cell; NaN where it has none)."""
        names, sums, counts = self.unit_sums(cells)
        with np.errstate(invalid="ignore", divide="ignore"):
            return names, sums / counts[..., None]


def _one_hot(choices: pd.Series, options: list[str]) -> np.ndarray:
    return (np.asarray(choices.astype(str))[:, None] == np.array(options)[None, :]).astype(float)


def _normalised(frame: pd.DataFrame, columns: list[str]) -> tuple[pd.DataFrame, np.ndarray]:
    values = frame[columns].astype(float)
    ok = values.notna().all(axis=1) & (values.sum(axis=1) > 0)
    kept = values[ok].to_numpy()
    return frame[ok], kept / kept.sum(axis=1, keepdims=True)


def distinct_prompts(table: pd.DataFrame, study: int) -> pd.DataFrame:
    """One row per (model, prompt): Experiment 2 gives the same numbers for the same prompt."""
    return table.drop_duplicates(["model_name", *[c for c in PROMPT_COLUMNS[study] if c in table.columns]])


def human2_responses(human: pd.DataFrame) -> Responses:
    """Study 2 human trials as one-hot utterance choices per goal x state; the unit is the participant."""
    cells = list(zip(human.Goal_simplified, human.State_number.astype(int)))
    return Responses(UTTERANCES, cells, _one_hot(human.utterance, UTTERANCES), human.subid.to_numpy(), "participant", True)


def human1_responses(human: pd.DataFrame, measure: str, checks: Iterable[str] = ()) -> Optional[Responses]:
    """Study 1 human trials for ``measure`` (bet, prior, knowledge) passing ``checks``; None when there are none."""
    human = human[exclusions.kept(human, "human", checks)]
    if measure == "bet":
        part = human[human.bet_0.notna()] if "bet_0" in human else human[:0]
        values, options, choice = part[[f"bet_{k}" for k in STATES]].to_numpy(float), BET_OPTIONS, False
    elif measure == "prior":
        part = human[human.prior.notna()] if "prior" in human else human[:0]
        values, options, choice = _one_hot(part.prior.astype(int).astype(str), BET_OPTIONS), BET_OPTIONS, True
    else:
        part = human[human.knowledge.notna()] if "knowledge" in human else human[:0]
        values, options, choice = _one_hot(part.knowledge, ["yes", "no"]), ["yes", "no"], True
    if part.empty:
        return None
    cells = list(zip(part.access.astype(int), part.observe.astype(int)))
    return Responses(options, cells, values, part.subid.to_numpy(), "participant", choice)


def _model(study: int, frame: pd.DataFrame, options: list[str], values: np.ndarray) -> Optional[Responses]:
    if frame.empty:
        return None
    if study == 2:
        cells = list(zip(frame.Goal_simplified.astype(str), frame.State_number.astype(int)))
    else:
        cells = list(zip(frame.access.astype(int), frame.observe.astype(int)))
    items = frame[ITEM_COLUMN[study]].astype(str).to_numpy()
    return Responses(options, cells, values, items, ITEM_UNIT[study])


def model_responses(table: pd.DataFrame, study: int, measure: str, experiment: str,
                    checks: Iterable[str] = ()) -> Optional[Responses]:
    """One model's analysis rows for ``measure`` from Experiment 1 (coded answers) or 2 (one row per distinct prompt),
    grouped by item; Study 1 rows failing ``checks`` are left out. None when the table has no such responses."""
    source = table if experiment == "exp1_coded" else distinct_prompts(table, study)
    if study == 1:
        source = source[exclusions.kept(source, experiment, checks)]
    if study == 2:
        if experiment == "exp1_coded":
            coded = source[source.response_cleaned.isin(UTTERANCES)]
            return _model(study, coded, UTTERANCES, _one_hot(coded.response_cleaned, UTTERANCES))
        part, values = _normalised(source, JOINT_COLUMNS)
        return _model(study, part, UTTERANCES, values)
    if measure == "bet":
        columns = [f"probability_{k}" for k in STATES] if experiment == "exp1_coded" else [f"state{k}_mean" for k in STATES]
        if not set(columns) <= set(source.columns):
            return None
        part, values = _normalised(source, columns)
        return _model(study, part, BET_OPTIONS, values)
    if measure == "prior":
        if experiment != "exp1_coded":
            return None  # Experiment 2 does not score the prior question
        part = source[source.Prior_A.notna()]
        return _model(study, part, BET_OPTIONS, _one_hot(part.Prior_A.astype(int).astype(str), BET_OPTIONS))
    if experiment == "exp1_coded":
        part = source[source.Knowledge_A.isin(["yes", "no"])]
        return _model(study, part, ["yes", "no"], _one_hot(part.Knowledge_A, ["yes", "no"]))
    part, values = _normalised(source, ["prob_knowledge_yes", "prob_knowledge_no"])
    return _model(study, part, ["yes", "no"], values)


def human_responses(study: int, human: Optional[pd.DataFrame], measure: str, checks: Iterable[str] = ()) -> Optional[Responses]:
    """The human file's per-trial responses for ``measure``; None when there is no human file."""
    if human is None:
        return None
    return human2_responses(human) if study == 2 else human1_responses(human, measure, checks)


def model_sources(table: Optional[pd.DataFrame], study: int, measure: str, checks: Iterable[str] = ()) -> dict[tuple[str, str], Responses]:
    """(model, experiment) -> that model's responses for ``measure``, every model and experiment the table has."""
    out: dict[tuple[str, str], Responses] = {}
    if table is None:
        return out
    for model, part in table.groupby("model_name", observed=True, sort=True):
        for experiment in EXPERIMENTS:
            responses = model_responses(part, study, measure, experiment, checks)
            if responses is not None:
                out[(str(model), experiment)] = responses
    return out


def plural(unit: str, n: int = 2) -> str:
    """``unit`` in the plural when ``n`` is not 1: 'story' -> 'stories', 'participant' -> 'participants'."""
    if n == 1:
        return unit
    return unit[:-1] + "ies" if unit.endswith("y") and unit[-2:-1] not in "aeiou" else unit + "s"


def experiment_label(experiment: str) -> str:
    """'Exp 2 probabilities' or 'Exp 1 coded' for an experiment key."""
    return "Exp 2 probabilities" if experiment == "exp2_probabilities" else "Exp 1 coded"
