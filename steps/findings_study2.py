"""Yoon, Tessler, Goodman & Frank (2020, Open Mind 4: 71-87) as contrasts over Study 2's goal x state cells.

Negation ("It wasn't ...") and positive utterances ("It was good" / "It was amazing") are
shares of a cell's responses; bad states are 0-1 hearts, good states 2-3, each averaged
over its two states. What the paper reports (its supplementary table: a Bayesian mixed-
effects logistic regression of a direct, non-negated utterance on true state x goal with
both-goal speakers as reference; coefficients on the logit scale, state standardised):

- true state: M = 2.18 [1.86, 2.53]: both-goal speakers negate more in bad states;
- goal: informative M = 0.47 [0.14, 0.80], kind M = 0.97 [0.51, 1.49]: both-goal speakers
  negate more overall than informative-only and kind-only speakers;
- true state x goal: informative M = -1.33 [-1.69, -0.98] (the paper's primary hypothesis),
  kind M = -0.50 [-0.92, -0.07]: the both-goal speakers' extra negation is in the worse states.

Shown in its figures but not tested there: at 0 hearts, negation is preferred by speakers
with both goals (Figs. 5 and 11); kind speakers tell white lies in bad states (Fig. 10; the
social utility a white lie serves, Introduction). These are tested here the same way; the
``paper`` column says which is which. Our contrasts are differences of shares (0-1 scale).
"""

from __future__ import annotations

from typing import Optional

import pandas as pd

from schemas.settings import AnalysisSettings
from steps.findings import Contrast, SourceResult, evaluate, findings_frame
from steps.responses import NEGATED, POSITIVE, STUDY2_CELLS, experiment_label, human_responses, model_sources

PAPER = "paper (Yoon et al. 2020)"
BAD, GOOD = (0, 1), (2, 3)
ALL_STATES = (0, 1, 2, 3)
GOAL_WORDS = {"informational": "informative", "social": "kind", "both": "both-goal"}


def _share(options: list[str], goal: str, states: tuple[int, ...], sign: float) -> tuple:
    """Terms of the share of ``options`` for ``goal``, averaged over ``states``, times ``sign``."""
    return tuple(((goal, s), o, sign / len(states)) for s in states for o in options)


def _drop(goal: str, sign: float = 1.0) -> tuple:
    """Terms of a goal's negation share in bad states minus in good states."""
    return _share(NEGATED, goal, BAD, sign) + _share(NEGATED, goal, GOOD, -sign)


def _versus(options: list[str], states: tuple[int, ...], goal: str, other: str) -> tuple:
    return _share(options, goal, states, 1.0) + _share(options, other, states, -1.0)


FINDINGS = (
    Contrast("neg-both-bad-vs-good", "both-goal speakers: negation in bad states (0-1 hearts) > in good states (2-3)",
             "reported: true state, M = 2.18 [1.86, 2.53]", "greater", _drop("both")),
    Contrast("neg-both-vs-informative", "negation overall: both-goal > informative speakers",
             "reported: goal (informative), M = 0.47 [0.14, 0.80]", "greater", _versus(NEGATED, ALL_STATES, "both", "informational")),
    Contrast("neg-both-vs-kind", "negation overall: both-goal > kind speakers",
             "reported: goal (kind), M = 0.97 [0.51, 1.49]", "greater", _versus(NEGATED, ALL_STATES, "both", "social")),
    Contrast("drop-both-vs-informative", "drop in negation from bad to good states: both-goal > informative speakers",
             "reported: state x goal (informative), M = -1.33 [-1.69, -0.98]; the primary hypothesis", "greater",
             _drop("both") + _drop("informational", -1.0)),
    Contrast("drop-both-vs-kind", "drop in negation from bad to good states: both-goal > kind speakers",
             "reported: state x goal (kind), M = -0.50 [-0.92, -0.07]", "greater", _drop("both") + _drop("social", -1.0)),
    Contrast("neg0-both-vs-informative", "at 0 hearts: negation, both-goal > informative speakers",
             "shown (Figs. 5, 11), not tested in the paper", "greater", _versus(NEGATED, (0,), "both", "informational")),
    Contrast("neg0-both-vs-kind", "at 0 hearts: negation, both-goal > kind speakers",
             "shown (Figs. 5, 11), not tested in the paper", "greater", _versus(NEGATED, (0,), "both", "social")),
    Contrast("pos-bad-kind-vs-informative", "white lies: 'It was good/amazing' in bad states, kind > informative speakers",
             "shown (Fig. 10), not tested in the paper", "greater", _versus(POSITIVE, BAD, "social", "informational")),
    Contrast("pos-bad-kind-vs-both", "white lies: 'It was good/amazing' in bad states, kind > both-goal speakers",
             "shown (Fig. 10), not tested in the paper", "greater", _versus(POSITIVE, BAD, "social", "both")),
)


def study2_results(table: Optional[pd.DataFrame], human: Optional[pd.DataFrame], settings: AnalysisSettings) -> list[SourceResult]:
    """Every source's findings: the humans (if given) first, then each model's Experiment 2 and Experiment 1 utterances."""
    results = []
    people = human_responses(2, human, "utterance")
    if people is not None:
        results.append(evaluate(FINDINGS, people, STUDY2_CELLS, "humans", True, settings))
    for (model, experiment), utterances in model_sources(table, 2, "utterance").items():
        results.append(evaluate(FINDINGS, utterances, STUDY2_CELLS, f"{model} · {experiment_label(experiment)}", False, settings))
    return results


def study2_findings(table: Optional[pd.DataFrame], human: Optional[pd.DataFrame], settings: AnalysisSettings) -> pd.DataFrame:
    """The Study 2 findings table (see :func:`steps.findings.findings_frame`)."""
    return findings_frame(FINDINGS, study2_results(table, human, settings), PAPER)


def self_check(frame: pd.DataFrame) -> Optional[tuple[int, int, list[str]]]:
    """(reproduced, findings, the findings the humans' own row does not reproduce); None without a human row."""
    human = frame[frame.source == "humans"]
    if human.empty:
        return None
    missed = human[human.verdict != "reproduced"].finding.tolist()
    return len(human) - len(missed), len(human), missed
