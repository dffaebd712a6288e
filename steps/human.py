"""Read and validate the human data files (``--human1``, ``--human2``) before any model time is spent.

:func:`load_human_table` returns a typed trial table or raises :class:`InputValidationError`
listing every problem with file, row, line and column, exactly like the study files.
Values are matched case-insensitively and without surrounding blanks; R's ``NA`` counts
as empty. Columns the format does not use (e.g. R's row-number column) are ignored with a
warning. Output columns: Study 2 -> ``subid, trial, item, Goal_simplified, State_number,
utterance`` (``It was terrible`` .. ``It wasn't amazing``); Study 1 -> ``subid, trial,
story, access, observe, prior, bet_0..bet_3`` (normalised to sum 1), ``knowledge``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pandas as pd
from pydantic import BaseModel, ValidationError

from schemas.human import (
    GOAL_NAMES,
    HUMAN1_OPTIONAL,
    HUMAN1_REQUIRED,
    HUMAN2_REQUIRED,
    POSITIVITY,
    STATE_NAMES,
    Human1Trial,
    Human2Trial,
)
from steps.errors import InputValidationError
from steps.inputs import cell_problem, missing_column_message, open_csv, validation_problems
from steps.parse_answers import canonical_utterance

HUMAN_FORMATS: dict[int, tuple[type[BaseModel], tuple[str, ...], tuple[str, ...]]] = {
    1: (Human1Trial, HUMAN1_REQUIRED, HUMAN1_OPTIONAL),
    2: (Human2Trial, HUMAN2_REQUIRED, ()),
}
_LOWERCASE = {"goal", "true_state", "positivity", "utterance", "knowledge"}
BETS = [f"bet_{k}" for k in range(4)]


@dataclass(frozen=True)
class HumanTable:
    """A validated human data file: one row per trial, and where it came from."""

    study: int
    path: str
    sha256: str
    frame: pd.DataFrame
    warnings: list[str] = field(default_factory=list)

    @property
    def participants(self) -> int:
        """The number of distinct participants (``subid``) in the file."""
        return int(self.frame["subid"].nunique())


def _clean(column: str, value: str) -> Optional[str]:
    text = value.strip()
    if text == "" or text.upper() == "NA":
        return None
    return text.lower() if column in _LOWERCASE else text


def _typed_row(study: int, trial: BaseModel) -> dict:
    values = trial.model_dump()
    if study == 2:
        return {"subid": values["subid"], "trial": values["trial"], "item": values["item"],
                "Goal_simplified": GOAL_NAMES[values["goal"]], "State_number": STATE_NAMES[values["true_state"]],
                "utterance": canonical_utterance(POSITIVITY[values["positivity"]], values["utterance"])}
    total = sum(values[b] for b in BETS) if values["bet_0"] is not None else None
    bets = {b: (values[b] / total if total else None) for b in BETS}
    return {"subid": values["subid"], "trial": values["trial"], "story": values["story"],
            "access": values["access"], "observe": values["observe"], "prior": values["prior"], **bets,
            "knowledge": values["knowledge"]}


def load_human_table(study: int, path: str | Path, encoding: str = "utf-8", s3_endpoint: Optional[str] = None) -> HumanTable:
    """Read ``path`` (file path, ``file://`` or ``s3://``) as study ``study``'s human data; InputValidationError on any problem."""
    if study not in HUMAN_FORMATS:
        raise InputValidationError(str(path), [f"there is no human data format for study {study}"])
    model, required, optional = HUMAN_FORMATS[study]
    file = open_csv(path, encoding, s3_endpoint)
    header = file.header
    known = set(required) | set(optional)
    unexpected = [h for h in header if h not in known]
    problems = [missing_column_message(c, unexpected) for c in required if c not in header]
    problems += [f"header: column {h!r} appears more than once" for h in sorted({h for h in header if header.count(h) > 1 and h})]
    if study == 1 and not problems and not {"prior", "knowledge", *BETS} & set(header):
        problems.append("header: no response column: give prior, bet_0..bet_3 and/or knowledge")
    if problems:
        raise InputValidationError(file.path, problems)
    warnings = [f"column {h!r} is not part of the study {study} human data format and is ignored" for h in unexpected]
    position = {h: i for i, h in enumerate(header)}
    rows: list[dict] = []
    try:
        records = list(file.records())
    except csv.Error as exc:
        raise InputValidationError(file.path, [f"line {file.reader.line_num}: not valid CSV ({exc})"]) from exc
    if not records:
        raise InputValidationError(file.path, ["the file has a header but no data rows"])
    for row_no, line, cells in records:
        if len(cells) != len(header):
            problems.append(f"row {row_no} (line {line}): has {len(cells)} fields, expected {len(header)} as in the header")
            continue
        values = {c: _clean(c, cells[position[c]]) for c in (*required, *optional) if c in position}
        empty = [c for c in required if values.get(c) is None]
        if empty:
            problems += [cell_problem(row_no, line, c, "is empty") for c in empty]
            continue
        try:
            trial = model.model_validate({k: v for k, v in values.items() if v is not None and k in model.model_fields})
        except ValidationError as exc:
            problems += validation_problems(exc, row_no, line)
            continue
        rows.append(_typed_row(study, trial))
    if problems:
        raise InputValidationError(file.path, problems)
    return HumanTable(study, file.path, file.sha256, pd.DataFrame(rows), warnings)
