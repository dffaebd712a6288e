"""The analysis-ready table per study (long: one row per input row x model x replication).

Built from the other schemas, so its columns, types and descriptions (and the generated
codebook) cannot drift from the stage tables. Columns renamed from their stage tables
say which stage they come from (``query_status``, ``probability_status``, ...).
"""

from __future__ import annotations

import copy
import types
import typing
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, create_model

from schemas.probabilities import PROBABILITY_ROW_MODELS
from schemas.raw_responses import raw_response_row_model
from schemas.structured import EXTRACTION_FIELDS, STRUCTURED_ROW_MODELS

RAW_RENAMES = {"status": "query_status", "error": "query_error", "template_hash": "query_template_hash"}
PROBABILITY_RENAMES = {"status": "probability_status", "error": "probability_error", "template_hash": "probability_template_hash"}
RAW_DROPPED = ("run_id", "row_index")  # re-added once, at the end
FACTOR_COLUMNS = ("model_name", "story_shortname", "Domain", "Goal_simplified", "scoring_method", "query_status",
                  "extraction_status", "probability_status")


KEY_COLUMNS = ("run_id", "row_index", "model_name", "model_id", "replication")  # in every model's rows, whatever stages ran


def _field(model: type[BaseModel], name: str):
    info = model.model_fields[name]
    return (info.annotation, info)


def _stage_field(model: type[BaseModel], name: str, stage: str):
    """A stage table's column in the analysis table: missing (NA) in the rows of a model whose ``stage`` did not run."""
    info = model.model_fields[name]
    if name in KEY_COLUMNS:
        return (info.annotation, info)
    optional = copy.copy(info)  # keeps its bounds (the codebook's allowed values)
    optional.default = None
    optional.description = f"{info.description or ''} (missing when {stage} did not run for the model)".strip()
    return (Optional[info.annotation], optional)


def analysis_row_model(study: int, input_model: type[BaseModel], probability_summary: str) -> type[BaseModel]:
    """The pydantic model of one analysis-table row for ``study`` (columns in order).

    The input columns and the row's key are always there; every other column comes from one
    stage and may be missing in the rows of a model for which that stage did not run (e.g. a
    model scored by Experiment 2 only has no Experiment 1 answer), so the codebook allows it.
    """
    raw = raw_response_row_model(input_model)
    structured = STRUCTURED_ROW_MODELS[study]
    probs = PROBABILITY_ROW_MODELS[probability_summary]
    fields: dict[str, Any] = {"run_id": _field(raw, "run_id"), "row_index": _field(raw, "row_index")}
    fields |= {n: _field(input_model, n) for n in input_model.model_fields}
    for name in raw.model_fields:
        if name not in fields and name not in RAW_DROPPED:
            fields[RAW_RENAMES.get(name, name)] = _stage_field(raw, name, "Experiment 1 (query)")
    for name in list(EXTRACTION_FIELDS[study].model_fields) + [n for n in structured.model_fields if n.startswith("extract")]:
        fields[name] = _stage_field(structured, name, "extraction")
    for name in probs.model_fields:
        if name not in fields and name not in ("run_id", "row_index", "model_id", "model_name", "replication"):
            fields[PROBABILITY_RENAMES.get(name, name)] = _stage_field(probs, name, "Experiment 2 (probabilities)")
    fields["review_flags"] = (Optional[str], Field(None, description="Validation flags of this row ('; '-separated), for manual review"))
    fields["review_reasons"] = (Optional[str], Field(None, description="Why each flag was raised"))
    fields["code_version"] = (str, Field(description="grace-pipeline version (and git commit) that produced the run"))
    return create_model(f"Study{study}Analysis", __config__=ConfigDict(extra="forbid"), **fields)


def codebook(model: type[BaseModel]) -> list[dict[str, str]]:
    """Column, type, allowed values and meaning of every column of ``model``."""
    rows = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
        base = next(a for a in typing.get_args(annotation) if a is not type(None)) if union else annotation
        allowed = ""
        if typing.get_origin(base) is typing.Literal:
            allowed = " | ".join(map(str, typing.get_args(base)))
            kind = "factor"
        else:
            r_types: dict[Any, str] = {int: "integer", float: "double", str: "character", bool: "logical"}
            kind = r_types.get(base, str(getattr(base, "__name__", base)))
            bounds = {type(m).__name__: getattr(m, type(m).__name__.lower(), None) for m in info.metadata}
            low, high = bounds.get("Ge"), bounds.get("Le")
            if low is not None or high is not None:
                allowed = f"{'' if low is None else low} .. {'' if high is None else high}"
        if name in FACTOR_COLUMNS and kind == "character":
            kind = "factor"
        nullable = union and type(None) in typing.get_args(annotation)
        rows.append({"column": name, "type": kind, "allowed_values": allowed, "missing_allowed": "yes" if nullable else "no",
                     "meaning": info.description or ""})
    return rows
