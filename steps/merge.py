"""The analysis-ready table of one study: every model's stage tables joined in long format.

One row per input row x model x replication (the shape R's lme4/brms and the tidyverse
expect: model and replication are factors, not column prefixes). Experiment 2 is
deterministic per input row, so its columns repeat across replications. Review flags
from validation are joined in as two columns. Pure: tables in, table out.
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


def merge_study(
    tables: dict[str, tuple[pd.DataFrame, Optional[pd.DataFrame], Optional[pd.DataFrame]]],
    flags: pd.DataFrame, row_model: type[BaseModel], code_version: str,
) -> pd.DataFrame:
    """``tables``: model name -> (raw responses, structured or None, probabilities or None)."""
    parts = []
    for model, (raw, structured, probs) in tables.items():
        merged = raw.rename(columns=RAW_RENAMES)
        if structured is not None:
            extra = [c for c in structured.columns if c not in raw.columns or c in KEY]
            merged = merged.merge(structured[extra], on=KEY, how="left", validate="one_to_one")
        if probs is not None:
            renamed = probs.rename(columns=PROBABILITY_RENAMES)
            extra = [c for c in renamed.columns if c not in merged.columns or c == "row_index"]
            merged = merged.merge(renamed[extra], on="row_index", how="left", validate="many_to_one")
        parts.append(merged)
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    table = table.merge(_flag_columns(flags), on=["model_name", *KEY], how="left")
    table["code_version"] = code_version
    table = table.sort_values(["row_index", "model_name", "replication"], kind="stable").reset_index(drop=True)
    return table.reindex(columns=list(row_model.model_fields))
