"""Study 1 exclusions like the researchers': trials whose answers fail the study's manipulation checks.

Two checks, both off unless asked for (``--study1-exclude prior,knowledge``):

- ``prior``: the answer to the prior question ("Before X says anything, how many of the 3 ...?")
  is not 3, although every story says the items *almost always* have the property: the
  reader did not take in the prior the inference rests on.
- ``knowledge``: the answer to "Does X know exactly how many ...?" contradicts the access
  condition: 'yes' is right only when the speaker looked at all 3 items (access 3).

Sources and their answers: humans (``prior``, ``knowledge`` columns of the human file),
Experiment 1 (the coded ``Prior_A``, ``Knowledge_A``), Experiment 2 (the more probable of
``prob_knowledge_yes`` / ``_no``; Experiment 2 does not ask the prior question, so the prior
check does not apply to it). A trial without the answer a check needs is kept (it cannot
fail it) and counted as unchecked.
"""

from __future__ import annotations

from typing import Iterable, Optional

import numpy as np
import pandas as pd

CHECKS = {
    "prior": "prior answer is not 3 (the story says the items almost always have the property)",
    "knowledge": "knowledge answer contradicts access ('yes' is right only after looking at all 3 items)",
}
EXPECTED_PRIOR = 3
FULL_ACCESS = 3


def _answers(frame: pd.DataFrame, source: str) -> tuple[pd.Series, pd.Series]:
    """(prior answer, knowledge answer) per row of ``frame`` for ``source`` (human, exp1_coded, exp2_probabilities)."""
    missing = pd.Series(np.nan, index=frame.index, dtype=object)
    if source == "human":
        return frame.get("prior", missing), frame.get("knowledge", missing)
    if source == "exp1_coded":
        return frame.get("Prior_A", missing), frame.get("Knowledge_A", missing)
    if {"prob_knowledge_yes", "prob_knowledge_no"} <= set(frame.columns):
        yes, no = frame.prob_knowledge_yes.astype(float), frame.prob_knowledge_no.astype(float)
        knowledge = pd.Series(np.where(yes > no, "yes", "no"), index=frame.index, dtype=object).where(yes.notna() & no.notna())
        return missing, knowledge
    return missing, missing


def failures(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """Per row and check: True where the row's answer fails the check, False where it passes, NA where it cannot be checked."""
    prior, knowledge = _answers(frame, source)
    expected = np.where(frame.access.astype(int) == FULL_ACCESS, "yes", "no")
    prior_num = pd.to_numeric(prior, errors="coerce")
    out = pd.DataFrame(index=frame.index)
    out["prior"] = (prior_num != EXPECTED_PRIOR).astype("boolean").where(prior_num.notna())
    known = knowledge.isin(["yes", "no"])
    out["knowledge"] = (knowledge != expected).astype("boolean").where(known)
    return out


def kept(frame: pd.DataFrame, source: str, checks: Iterable[str]) -> pd.Series:
    """True for the rows of ``frame`` that fail none of ``checks`` (all rows when no check is asked for)."""
    checks = list(checks)
    unknown = [c for c in checks if c not in CHECKS]
    if unknown:
        raise ValueError(f"unknown Study 1 check(s) {unknown}; known: {sorted(CHECKS)}")
    if not checks or frame.empty:
        return pd.Series(True, index=frame.index)
    failed = failures(frame, source)[checks].fillna(False).astype(bool)
    return ~failed.any(axis=1)


def exclusion_counts(table: Optional[pd.DataFrame], human: Optional[pd.DataFrame], checks: Iterable[str],
                     prompt_columns: list[str]) -> pd.DataFrame:
    """Per source: trials, how many fail each check (and could not be checked), and how many are kept under ``checks``.

    Experiment 2 counts distinct prompts (``prompt_columns`` decide a prompt), as its analysis does."""
    checks = list(checks)
    rows = []

    def count(frame: pd.DataFrame, source: str, label: str) -> None:
        fails = failures(frame, source)
        row: dict[str, object] = {"source": label, "trials": len(frame)}
        for check in CHECKS:
            row[f"fail {check}"] = int(fails[check].fillna(False).sum())
            row[f"unchecked {check}"] = int(fails[check].isna().sum())
        excluded = int((~kept(frame, source, checks)).sum())
        row["excluded"], row["kept"] = excluded, len(frame) - excluded
        rows.append(row)

    if human is not None:
        count(human, "human", "humans (trials)")
    if table is not None:
        for model, part in table.groupby("model_name", observed=True, sort=True):
            count(part, "exp1_coded", f"{model} · Exp 1 coded (answers)")
            distinct = part.drop_duplicates([c for c in prompt_columns if c in part.columns])
            count(distinct, "exp2_probabilities", f"{model} · Exp 2 (prompts)")
    return pd.DataFrame(rows)
