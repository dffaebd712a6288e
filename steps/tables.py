"""Write step tables as Parquet and CSV that R reads without surprises.

Types come from the table's pydantic row model: int -> nullable Int64, float ->
Float64, datetime -> UTC timestamp, text -> string. CSV: UTF-8, header, no index,
``NA`` for missing, ISO 8601 timestamps. Both files go through a
:class:`~steps.store.Store`, whose writes are atomic, so a reader never sees half a file.
"""

from __future__ import annotations

import io
import types
import typing
from datetime import datetime
from typing import Any, Optional

import pandas as pd
from pydantic import BaseModel

from steps.store import Store


def _base_type(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _base_type(args[0]) if len(args) == 1 else str
    if origin is typing.Literal:
        return type(typing.get_args(annotation)[0])
    return annotation


def coerce_to_schema(frame: pd.DataFrame, row_model: type[BaseModel]) -> pd.DataFrame:
    """``frame`` with exactly ``row_model``'s columns, in order, with the model's types."""
    out = frame.reindex(columns=list(row_model.model_fields)).copy()
    for name, field in row_model.model_fields.items():
        kind = _base_type(field.annotation)
        if kind is bool:
            out[name] = out[name].astype("boolean")
        elif kind is int:
            out[name] = pd.to_numeric(out[name]).astype("Int64")
        elif kind is float:
            out[name] = pd.to_numeric(out[name]).astype("Float64")
        elif kind is datetime:
            out[name] = pd.to_datetime(out[name], utc=True, format="ISO8601")
        else:
            out[name] = out[name].astype("string")
    return out


def plain_value(value: Any) -> Any:
    """A table cell as a plain JSON-ready Python value: NA -> None, numpy scalar -> Python, timestamp -> ISO text."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value.item() if hasattr(value, "item") else value


def plain_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows of ``frame`` as dicts of :func:`plain_value` s (what checkpoints hold)."""
    return [{k: plain_value(v) for k, v in row.items()} for row in frame.astype(object).to_dict(orient="records")]


def read_table(store: Store, stem: str) -> Optional[pd.DataFrame]:
    """``stem``.parquet as written by :func:`write_table`, or None when it does not exist."""
    data = store.read_bytes(stem + ".parquet")
    return pd.read_parquet(io.BytesIO(data)) if data is not None else None


def write_table(frame: pd.DataFrame, row_model: type[BaseModel], store: Store, stem: str, already_typed: bool = False) -> list[str]:
    """Write ``stem``.parquet and ``stem``.csv; return where both are (paths or URLs)."""
    typed = frame if already_typed else coerce_to_schema(frame, row_model)
    parquet, csv = io.BytesIO(), io.StringIO()
    typed.to_parquet(parquet, index=False, engine="pyarrow")
    typed.to_csv(csv, index=False, na_rep="NA", date_format="%Y-%m-%dT%H:%M:%S.%fZ")
    store.write_bytes(stem + ".parquet", parquet.getvalue())
    store.write_bytes(stem + ".csv", csv.getvalue().encode("utf-8"))
    return [store.uri(stem + ".parquet"), store.uri(stem + ".csv")]
