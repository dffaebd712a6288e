"""The analysis-ready table of one study: every model's stage tables joined in long format.

One row per input row x model x replication (the shape R's lme4/brms and the tidyverse
expect: model and replication are factors, not column prefixes). Experiment 2 is
deterministic per input row, so its columns repeat across replications; a model whose
Experiment 1 did not run has one row per input row (replication 0) with its Experiment 1
and extraction columns missing. Review flags from validation are joined in as two columns.
Pure: tables in, table out.
"""

from __future__ import annotations

from typing import Optional

import pandas as pd
from pydantic import BaseModel

from schemas.analysis import PROBABILITY_RENAMES, RAW_RENAMES
from steps.validate import KEY


def _flag_columns(flags: pd.DataFrame) -> pd.DataFrame:
    if flags.empty:
        return pd.DataFrame(columns=["model_name", *KEY, "review_flags", "review_reasons"])
    grouped = flags.groupby(["model_name", *KEY], sort=False)
    return grouped.agg(review_flags=("flag", lambda s: "; ".join(dict.fromkeys(s))),
                       review_reasons=("reason", lambda s: "; ".join(dict.fromkeys(map(str, s))))).reset_index()


def _model_rows(raw: Optional[pd.DataFrame], structured: Optional[pd.DataFrame], probs: Optional[pd.DataFrame]) -> pd.DataFrame:
    """One model's rows: Experiment 1's answers (or, when only extraction's table is there, its copy of them) with the
    coded fields and Experiment 2 joined in; without Experiment 1, one row per scored input row (replication 0)."""
    if raw is None and structured is not None:
        raw, structured = structured, None  # the structured table is the raw-responses table plus the coded fields
    if raw is not None:
        merged = raw.rename(columns=RAW_RENAMES)
        if structured is not None:
            extra = [c for c in structured.columns if c not in raw.columns or c in KEY]
            merged = merged.merge(structured[extra], on=KEY, how="left", validate="one_to_one")
        if probs is not None:
            renamed = probs.rename(columns=PROBABILITY_RENAMES)
            extra = [c for c in renamed.columns if c not in merged.columns or c == "row_index"]
            merged = merged.merge(renamed[extra], on="row_index", how="left", validate="many_to_one")
        return merged
    if probs is None:
        raise ValueError("a model in the merge has no table at all")
    merged = probs.rename(columns=PROBABILITY_RENAMES)
    merged["replication"] = 0
    return merged


def merge_study(
    tables: dict[str, tuple[Optional[pd.DataFrame], Optional[pd.DataFrame], Optional[pd.DataFrame]]],
    flags: pd.DataFrame, row_model: type[BaseModel], code_version: str,
) -> pd.DataFrame:
    """``tables``: model name -> (raw responses, structured, probabilities), None for a stage that did not run (at
    least one per model). A column of a stage that did not run is missing (NA) in that model's rows."""
    parts = [_model_rows(raw, structured, probs) for raw, structured, probs in tables.values()]
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    table = table.merge(_flag_columns(flags), on=["model_name", *KEY], how="left")
    table["code_version"] = code_version
    table = table.sort_values(["row_index", "model_name", "replication"], kind="stable").reset_index(drop=True)
    return table.reindex(columns=list(row_model.model_fields))
