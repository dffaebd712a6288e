"""Validation of one model x study's outputs: integrity checks and rows flagged for review.

Integrity checks decide whether validation passes: row counts match the input (per
replication), no duplicate or missing row ids, in every row every probability in [0, 1],
every distribution summing to 1 and every option mass in (0, 1] (a mass above 1 means a
log-probability above 0: impossible), no probability filled in for a failed row,
structured fields valid against ``schemas.structured``, and every coded row made from
the same answer as the raw-responses row it belongs to (Study 2's ``response_cleaned``
agreeing with its own fields).
Review flags never fail a run; they mark rows a researcher should look at: the query
failed, the answer was empty, bets that do not sum to 100, low option mass, extraction
confidence below a threshold, an Experiment 1 answer that disagrees with Experiment 2's
most probable option.

:func:`validate_outputs` is pure: tables in, :class:`Validation` out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import pandas as pd
from pydantic import ValidationError

from schemas.probabilities import ASSESSMENTS, FRAMES, PERCENT_BINS, STATES, STUDY1_MASS_COLUMNS, STUDY2_MASS_COLUMNS
from schemas.structured import EXTRACTION_FIELDS
from steps.parse_answers import canonical_utterance
from steps.tables import plain_value

SUM_TOLERANCE = 1e-6
DEFAULT_MIN_CONFIDENCE = 0.5
KEY = ["row_index", "replication"]


@dataclass
class Check:
    """One integrity check's result."""

    name: str
    passed: bool
    detail: str = ""


@dataclass
class Validation:
    """All checks and flags for one model x study."""

    model: str
    study: int
    checks: list[Check] = field(default_factory=list)
    flags: list[dict[str, Any]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Whether every check passed."""
        return all(c.passed for c in self.checks)

    def check(self, name: str, problems: list[str]) -> None:
        """Record check ``name``: passed when ``problems`` is empty, else failed showing the first five problems."""
        shown = "; ".join(problems[:5]) + (f"; ... {len(problems) - 5} more" if len(problems) > 5 else "")
        self.checks.append(Check(name, not problems, shown))

    def flag(self, rows: pd.DataFrame, flag: str, reason) -> None:
        """Flag each of ``rows`` with ``flag``; ``reason`` is a text or a function of the row that gives it."""
        for _, row in rows.iterrows():
            self.flags.append({"model_name": self.model, "study": self.study, "row_index": int(row["row_index"]),
                               "replication": int(row.get("replication", 0) or 0), "flag": flag,
                               "reason": reason(row) if callable(reason) else reason})


def _ids(frame: pd.DataFrame, expected: set[tuple[int, int]], name: str) -> list[str]:
    keys = list(zip(frame["row_index"].astype(int), frame.get("replication", pd.Series(0, index=frame.index)).fillna(0).astype(int)))
    problems = []
    duplicated = sorted({k for k in keys if keys.count(k) > 1})
    if duplicated:
        problems.append(f"{name}: duplicate row ids {duplicated[:5]}")
    missing = sorted(expected - set(keys))
    if missing:
        problems.append(f"{name}: missing row ids {missing[:5]}" + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    extra = sorted(set(keys) - expected)
    if extra:
        problems.append(f"{name}: unexpected row ids {extra[:5]}")
    return problems


def distribution_columns(study: int) -> dict[str, list[str]]:
    """Each distribution of a probabilities table: name -> columns that must sum to 1."""
    if study == 1:
        groups = {f"state{k}": [f"state{k}_prob_{p}" for p in PERCENT_BINS] for k in STATES}
        groups["knowledge"] = ["prob_knowledge_yes", "prob_knowledge_no"]
        return groups
    return {
        "joint": [f"prob_{f}_{a}" for f in FRAMES for a in ASSESSMENTS],
        "frame": ["prob_was", "prob_wasnt"],
        "assessment": [f"prob_{a}" for a in ASSESSMENTS],
    }


def _mass_problems(probs: pd.DataFrame, study: int) -> list[str]:
    """Every ok row's option masses finite and in (0, 1]; a failed row has no probability filled in."""
    problems = []
    ok = probs[probs["status"] == "ok"]
    exact = ok["scoring_method"].eq("exact") if "scoring_method" in ok else pd.Series(True, index=ok.index)
    for column in STUDY1_MASS_COLUMNS if study == 1 else STUDY2_MASS_COLUMNS:
        if column not in ok:
            continue
        mass = ok.loc[exact, column].astype(float)
        bad = ~(np.isfinite(mass) & (mass > 0) & (mass <= 1 + SUM_TOLERANCE))
        problems += [f"row {int(r)}: {column} is {m}, outside (0, 1]" for r, m in zip(ok.loc[exact].loc[bad, "row_index"], mass[bad])]
    failed = probs[probs["status"] != "ok"]
    columns = [c for group in distribution_columns(study).values() for c in group if c in failed]
    if len(failed) and columns:
        filled = failed[columns].astype(float).notna().any(axis=1)
        problems += [f"row {int(r)}: failed but has probabilities filled in" for r in failed.loc[filled, "row_index"]]
    return problems


def _pairing_problems(raw: pd.DataFrame, structured: pd.DataFrame, study: int) -> list[str]:
    """Rows whose coded fields were not made from the raw row's own answer (e.g. two runs interleaved)."""
    problems = []
    answers = {(int(r), int(k or 0)): a for r, k, a in zip(raw["row_index"], raw.get("replication", 0), raw["model_response"])}
    for _, row in structured.iterrows():
        key = (int(row["row_index"]), int(row.get("replication", 0) or 0))
        if key in answers and plain_value(answers[key]) != plain_value(row.get("model_response")):
            problems.append(f"row {key[0]} replication {key[1]}: coded from an answer that is not the raw responses' answer")
    if study == 2 and "response_cleaned" in structured:
        for _, row in structured.iterrows():
            frame, word = plain_value(row.get("Was_Wasnt")), plain_value(row.get("Assessment"))
            expected = canonical_utterance(frame, word) if frame is not None and word is not None else None
            if plain_value(row.get("response_cleaned")) != expected:
                problems.append(f"row {int(row['row_index'])}: response_cleaned {row.get('response_cleaned')!r} does not match "
                                f"Was_Wasnt/Assessment ({expected!r})")
    return problems


def _probability_problems(probs: pd.DataFrame, study: int) -> list[str]:
    problems = []
    ok = probs[probs["status"] == "ok"]
    for name, columns in distribution_columns(study).items():
        missing_columns = [c for c in columns if c not in ok]
        if missing_columns:
            problems.append(f"{name}: columns missing {missing_columns}")
            continue
        values = ok[columns].to_numpy(dtype=float)
        exact = ok["scoring_method"].eq("exact").to_numpy(dtype=bool, na_value=False)
        bad_range = ~np.isnan(values) & ((values < 0) | (values > 1))
        for i in np.unique(np.nonzero(bad_range)[0]):
            problems.append(f"row {int(ok['row_index'].iloc[i])}: {name} probability outside [0, 1]")
        sums = np.nansum(values, axis=1)
        for i in np.nonzero(exact & (np.abs(sums - 1) > SUM_TOLERANCE))[0]:
            problems.append(f"row {int(ok['row_index'].iloc[i])}: {name} sums to {sums[i]:.6f}, not 1")
        for i in np.nonzero(exact & np.isnan(values).any(axis=1))[0]:
            problems.append(f"row {int(ok['row_index'].iloc[i])}: {name} has missing probabilities")
    if study == 2:  # the marginals must be sums of the joint
        marginals = {f"prob_{f}": [f"prob_{f}_{a}" for a in ASSESSMENTS] for f in FRAMES}
        marginals |= {f"prob_{a}": [f"prob_{f}_{a}" for f in FRAMES] for a in ASSESSMENTS}
        for marginal, parts in marginals.items():
            diff = (ok[marginal].astype(float) - ok[parts].astype(float).sum(axis=1)).abs()
            problems += [f"row {int(r)}: {marginal} is not the sum of the joint" for r in ok.loc[diff > SUM_TOLERANCE, "row_index"]]
    return problems


def _plain(value: Any) -> Any:
    """A table cell as the Python value pydantic expects (NA -> None, 3.0 -> 3)."""
    value = plain_value(value)
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _structured_problems(structured: pd.DataFrame, study: int) -> list[str]:
    fields = EXTRACTION_FIELDS[study]
    problems = []
    for _, row in structured.iterrows():
        values = {name: _plain(row.get(name)) for name in fields.model_fields}
        try:
            fields.model_validate(values)
        except ValidationError as exc:
            problems.append(f"row {int(row['row_index'])}: " + "; ".join(f"{e['loc'][0]}: {e['msg']}" for e in exc.errors()))
    if "extraction_confidence" in structured:
        bad = structured[~structured["extraction_confidence"].between(0, 1)]
        problems += [f"row {int(r)}: extraction_confidence outside [0, 1]" for r in bad["row_index"]]
    return problems


def _disagreements(structured: pd.DataFrame, probs: pd.DataFrame, study: int) -> pd.DataFrame:
    """Rows whose Experiment 1 coded answer differs from Experiment 2's most probable option.

    Adds ``exp1_answer`` and ``exp2_answer``; rows without a coded answer are not compared.
    """
    ok = probs[probs["status"] == "ok"].set_index("row_index")
    rows = structured[structured["row_index"].isin(ok.index)].copy()
    if study == 1:
        yes, no = ok["prob_knowledge_yes"].astype(float), ok["prob_knowledge_no"].astype(float)
        best = pd.Series(np.where(yes >= no, "yes", "no"), index=ok.index).where(yes.notna() & no.notna())
        rows["exp1_answer"] = rows["Knowledge_A"]
    else:
        columns = [f"prob_{f}_{a}" for f in FRAMES for a in ASSESSMENTS]
        labels = {f"prob_{f}_{a}": f"It {'was' if f == 'was' else 'wasn' + chr(39) + 't'} {a}" for f in FRAMES for a in ASSESSMENTS}
        best = ok[columns].astype(float).idxmax(axis=1).map(labels)
        rows["exp1_answer"] = rows["response_cleaned"]
    rows["exp2_answer"] = rows["row_index"].map(best)
    coded = rows["exp1_answer"].notna() & rows["exp2_answer"].notna()
    return rows[coded & (rows["exp1_answer"] != rows["exp2_answer"])]


def validate_outputs(
    model: str, study: int, input_rows: int, replications: int,
    raw: Optional[pd.DataFrame], structured: Optional[pd.DataFrame], probs: Optional[pd.DataFrame],
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
) -> Validation:
    """Every check and flag for one model x study (tables that were not produced are None)."""
    v = Validation(model, study)
    expected_raw = {(r, k) for r in range(input_rows) for k in range(replications)}
    if raw is not None:
        v.check("raw_responses: row ids and count", _ids(raw, expected_raw, "raw_responses"))
        failed = raw[raw["status"] == "failed"]
        v.flag(failed, "query_failed", lambda r: str(r["error"]))
        empty = raw[(raw["status"] == "ok") & raw["model_response"].fillna("").str.strip().eq("")]
        v.check("raw_responses: no missing answers in ok rows", [f"row {int(r)}: empty model_response" for r in empty["row_index"]])
    if structured is not None:
        v.check("structured: row ids and count", _ids(structured, expected_raw, "structured"))
        v.check("structured: fields valid against schemas/", _structured_problems(structured, study))
        low = structured[structured["extraction_confidence"] < min_confidence]
        v.flag(low, "low_extraction_confidence", lambda r: f"confidence {r['extraction_confidence']:.2f}: {r['extraction_errors']}")
        if study == 1:
            bets = structured[[f"probability_{s}" for s in range(4)]].astype(float)
            off = structured[bets.notna().all(axis=1) & (bets.sum(axis=1) != 100)]
            v.flag(off, "bets_not_100", lambda r: f"bets sum to {int(sum(r[f'probability_{s}'] for s in range(4)))}")
    if probs is not None:
        v.check("probabilities: row ids and count", _ids(probs, {(r, 0) for r in range(input_rows)}, "probabilities"))
        v.check("probabilities: in [0, 1] and summing to 1", _probability_problems(probs, study))
        v.check("probabilities: option masses in (0, 1], failed rows empty", _mass_problems(probs, study))
        v.flag(probs[probs["status"] == "failed"], "probabilities_failed", lambda r: str(r["error"]))
        if "low_option_mass" in probs:
            v.flag(probs[probs["low_option_mass"].fillna(False).astype(bool)], "low_option_mass",
                   "the answer options carried little probability")
    if raw is not None and structured is not None:
        v.check("structured: coded from the raw responses' own answers", _pairing_problems(raw, structured, study))
    if structured is not None and probs is not None:
        v.flag(_disagreements(structured, probs, study), "exp1_exp2_disagree",
               lambda r: f"Experiment 1 answer {r['exp1_answer']!r}, Experiment 2 most probable {r['exp2_answer']!r}")
    return v
