"""Goodman & Stuhlmueller (2013, Experiment 2, number words) as contrasts over Study 1's access x observe cells.

The paper: with full access (the speaker looked at all 3 items) listeners read "one"/"two" as
upper-bounded (they bet more on exactly the stated number than on more); with partial access
that reading weakens or disappears. Its findings, each tested by the paper as a paired
comparison of bets:

- greater with full access: 'two' 2 > 3; 'one' 1 > 2; 'one' 1 > 3; and with 2 of 3 seen,
  'one' 1 > 3 (the one unseen item cannot make it three);
- no longer greater with partial access: 'two' after 2 seen, 2 vs 3; 'one' after 1 seen,
  1 vs 2 and 1 vs 3; 'one' after 2 seen, 1 vs 2.

"No longer" is a change across access levels, so each is paired with its **cancellation
contrast** (the full-access difference minus the partial-access one, paired within the
story for models and within the participant for humans), which must itself be reproduced.
The **word x access interaction** (does losing access cancel the upper bound of 'two' more
than that of 'one'? access 3 vs 2, on bet(stated) - bet(stated + 1)) is shown as an estimate:
the paper reports the interaction, not a direction for this contrast.
"""

from __future__ import annotations

from typing import Optional

import pandas as pd

from schemas.settings import AnalysisSettings
from steps.findings import Contrast, SourceResult, evaluate, findings_frame
from steps.responses import STUDY1_CELLS, experiment_label, human_responses, model_sources

PAPER = "paper (Goodman & Stuhlmueller 2013, Exp. 2)"
WORDS = {1: "one", 2: "two"}


def _diff(cell: tuple, higher: int, lower: int, sign: float = 1.0) -> tuple:
    return ((cell, str(higher), sign), (cell, str(lower), -sign))


def _where(access: int) -> str:
    return "full access (3 of 3 seen)" if access == 3 else f"partial access ({access} of 3 seen)"


def _pair(key: str, access: int, observe: int, higher: int, lower: int, greater: bool, requires: Optional[str] = None) -> Contrast:
    relation = ">" if greater else "no longer >"
    return Contrast(key, f"'{WORDS[observe]}', {_where(access)}: bet on {higher} {relation} bet on {lower}",
                    "greater (paired test, significant)" if greater else "not greater (paired test, not significant)",
                    "greater" if greater else "not greater", _diff((access, observe), higher, lower), requires)


def _cancellation(key: str, partial: int, observe: int, higher: int, lower: int) -> Contrast:
    word = WORDS[observe]
    return Contrast(key, f"cancellation, '{word}': (bet {higher} - bet {lower}) with full access minus with {partial} of 3 seen > 0",
                    "implied: greater with full access, not greater with partial access (the paper's main effect of access)",
                    "greater", _diff((3, observe), higher, lower) + _diff((partial, observe), higher, lower, -1.0))


INTERACTION = Contrast(
    "word-x-access", "word x access: cancellation of the upper bound (bet on stated - bet on stated + 1, access 3 vs 2), "
    "'two' minus 'one'", "an interaction is reported (ANOVA); no direction for this contrast: estimate only", "estimate",
    _diff((3, 2), 2, 3) + _diff((2, 2), 2, 3, -1.0) + _diff((3, 1), 1, 2, -1.0) + _diff((2, 1), 1, 2))

FINDINGS = (
    _pair("two-full-2v3", 3, 2, 2, 3, True),
    _pair("one-full-1v2", 3, 1, 1, 2, True),
    _pair("one-full-1v3", 3, 1, 1, 3, True),
    _pair("one-a2-1v3", 2, 1, 1, 3, True),
    _pair("two-a2-2v3", 2, 2, 2, 3, False, "cancel-two-a2-2v3"),
    _pair("one-a1-1v2", 1, 1, 1, 2, False, "cancel-one-a1-1v2"),
    _pair("one-a1-1v3", 1, 1, 1, 3, False, "cancel-one-a1-1v3"),
    _pair("one-a2-1v2", 2, 1, 1, 2, False, "cancel-one-a2-1v2"),
    _cancellation("cancel-two-a2-2v3", 2, 2, 2, 3),
    _cancellation("cancel-one-a1-1v2", 1, 1, 1, 2),
    _cancellation("cancel-one-a1-1v3", 1, 1, 1, 3),
    _cancellation("cancel-one-a2-1v2", 2, 1, 1, 2),
    INTERACTION,
)


def study1_results(table: Optional[pd.DataFrame], human: Optional[pd.DataFrame], settings: AnalysisSettings) -> list[SourceResult]:
    """Every source's findings: the humans (if given) first, then each model's Experiment 2 and Experiment 1 bets."""
    checks = settings.study1_exclude
    results = []
    people = human_responses(1, human, "bet", checks)
    if people is not None:
        results.append(evaluate(FINDINGS, people, STUDY1_CELLS, "humans", True, settings))
    for (model, experiment), bets in model_sources(table, 1, "bet", checks).items():
        results.append(evaluate(FINDINGS, bets, STUDY1_CELLS, f"{model} · {experiment_label(experiment)}", False, settings))
    return results


def study1_findings(table: Optional[pd.DataFrame], human: Optional[pd.DataFrame], settings: AnalysisSettings) -> pd.DataFrame:
    """The Study 1 findings table (see :func:`steps.findings.findings_frame`); empty when no source has bets."""
    return findings_frame(FINDINGS, study1_results(table, human, settings), PAPER)
