"""Experiment 1 output: ``{model}_study{n}_raw_responses``.

Column order: the study's seed input columns, then :class:`ResponseColumns` (the
seed's four), then the study's extra input columns, then :class:`ProvenanceColumns`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, create_model

from schemas.inputs import Study1Input, Study2Input, extra_input_columns, seed_columns

RowStatus = Literal["ok", "failed"]


class ResponseColumns(BaseModel):
    """The seed's Experiment 1 columns."""

    model_config = ConfigDict(extra="forbid")

    model_name: str = Field(description="Model used (registry name, e.g. 'gemma-2-9b-it')")
    model_response: Optional[str] = Field(
        description="The model's answer text; a reasoning model's <think> trace is NOT included (see reasoning_trace). "
                    "Empty when status is 'failed' (a reasoning model's reply whose trace never ended has no answer)."
    )
    response_timestamp: Optional[datetime] = Field(description="UTC time the response arrived")
    processing_time_ms: Optional[float] = Field(
        description="This row's own request latency in milliseconds (the successful attempt; excludes retries and queueing)"
    )


class ProvenanceColumns(BaseModel):
    """Extra columns: which run, which sample, and what exactly was asked."""

    model_config = ConfigDict(extra="forbid")

    run_id: str = Field(description="Run identifier shared by every table of one run")
    row_index: int = Field(ge=0, description="0-based position of the row in the input file")
    replication: int = Field(ge=0, description="Sample number for this row (0..replications-1)")
    seed: Optional[int] = Field(description="Sampling seed sent with this request (derived from the run seed, row and replication)")
    reasoning_trace: Optional[str] = Field(description="A reasoning model's <think> trace, split off the answer; empty for other models. "
                                           "A trace that never ended (no </think>) is kept here and the row fails: it has no answer")
    trace_split: Optional[Literal["server", "think-tags"]] = Field(
        description="How the trace was split off: 'server' (the server returned it in its own field: vLLM --reasoning-parser), "
                    "'think-tags' (the pipeline split the reply at </think>); empty when the reply held no trace")
    finish_reason: Optional[str] = Field(description="Why generation stopped ('stop', 'length', ...), as the server reported it")
    prompt_tokens: Optional[int] = Field(description="Prompt tokens as counted by the server")
    completion_tokens: Optional[int] = Field(description="Generated tokens as counted by the server")
    model_id: str = Field(description="What the server was asked for: the HF id (vLLM) or served alias")
    template_hash: str = Field(description="sha256 (first 16 hex) of the study's prompt template")
    prompt_hash: str = Field(description="sha256 (first 16 hex) of the exact chat messages sent for this row")
    temperature: float = Field(description="Sampling temperature sent")
    max_tokens: int = Field(description="Maximum generated tokens sent")
    attempts: int = Field(ge=0, description="HTTP attempts made for this row (1 = no retry)")
    status: RowStatus = Field(description="'ok' or 'failed'")
    error: Optional[str] = Field(description="Why the row failed (after retries); empty when status is 'ok'")


def raw_response_columns(input_model: type[BaseModel]) -> list[str]:
    """The full, ordered column list of a raw-responses table for one study."""
    return (
        seed_columns(input_model)
        + list(ResponseColumns.model_fields)
        + extra_input_columns(input_model)
        + list(ProvenanceColumns.model_fields)
    )


def raw_response_row_model(input_model: type[BaseModel]) -> type[BaseModel]:
    """A pydantic model of one output row (used for the exported JSON Schema)."""
    fields = {**input_model.model_fields, **ResponseColumns.model_fields, **ProvenanceColumns.model_fields}
    ordered: dict[str, Any] = {name: (fields[name].annotation, fields[name]) for name in raw_response_columns(input_model)}
    name = input_model.__name__.replace("Input", "RawResponse")
    return create_model(name, __config__=ConfigDict(extra="forbid"), __doc__=f"One row of {name}.", **ordered)


Study1RawResponse = raw_response_row_model(Study1Input)
Study2RawResponse = raw_response_row_model(Study2Input)
