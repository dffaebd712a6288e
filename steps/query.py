"""Experiment 1: one chat completion per input row x replication x model.

Pure halves (tested on recorded JSON): :func:`build_chat_payload` and
:func:`parse_chat_response`. :func:`run_query_step` drives them through the shared
:class:`~steps.llm_client.LLMClient`, checkpointing every finished row.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Optional

import pandas as pd

from schemas.raw_responses import raw_response_columns
from schemas.settings import ModelSpec, SamplingSettings
from steps.checkpoint import AnyCheckpoint
from steps.llm_client import LLMClient, RequestFailed
from steps.outcome import NoProgress, RowProgress, StepOutcome, run_resumable
from steps.prompts import messages_hash, render_messages
from steps.reasoning import SplitReply, TraceSplit, no_answer_reason, split_reply
from steps.studies import StudySpec

CHAT_PATH = "/v1/chat/completions"
DEFAULT_MAX_FAILED_FRACTION = 0.1


class ResponseFormatError(ValueError):
    """A 2xx chat response without the fields every OpenAI-compatible server sends."""


@dataclass(frozen=True)
class ParsedChat:
    """The useful parts of one chat completion; ``answer`` None: the reply has no answer (its trace never ended)."""

    answer: Optional[str]
    reasoning_trace: Optional[str]
    finish_reason: Optional[str]
    prompt_tokens: Optional[int]
    completion_tokens: Optional[int]
    trace_split: Optional[TraceSplit] = None


def row_seed(run_seed: int, study: int, row_index: int, replication: int) -> int:
    """A per-request seed in [0, 2**31): distinct per row and replication, stable across runs."""
    digest = hashlib.sha256(f"{run_seed}:{study}:{row_index}:{replication}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def effective_max_tokens(model: ModelSpec, sampling: SamplingSettings) -> int:
    """The registry's max_tokens for this model (reasoning models need more), else the run's."""
    return max(model.max_tokens, sampling.max_tokens) if model.max_tokens else sampling.max_tokens


def build_chat_payload(
    model: ModelSpec, messages: list[dict[str, str]], sampling: SamplingSettings, seed: int
) -> dict[str, Any]:
    """The /v1/chat/completions body (OpenAI-compatible; vLLM and llama.cpp accept it)."""
    return {
        "model": model.request_model,
        "messages": messages,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "max_tokens": effective_max_tokens(model, sampling),
        "seed": seed,
        "stream": False,
    }


def parse_chat_response(body: dict[str, Any], reasoning: bool = False) -> ParsedChat:
    """Answer, reasoning trace, how the trace was split, finish reason and token counts from a chat completion body.

    ``reasoning``: the model is registered ``reasoning: true`` (see :mod:`steps.reasoning`: a
    trace the server split off is used as is; otherwise ``content`` is split at ``</think>``).
    """
    try:
        choice = body["choices"][0]
        message = choice["message"]
    except (KeyError, IndexError, TypeError) as exc:
        raise ResponseFormatError("response has no choices[0].message") from exc
    if not isinstance(message, dict):
        raise ResponseFormatError("choices[0].message is not an object")
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        raise ResponseFormatError("choices[0].message.content is not text")
    reply = split_reply(message, reasoning)
    usage = body.get("usage") or {}
    return ParsedChat(
        answer=reply.answer,
        reasoning_trace=reply.trace,
        finish_reason=choice.get("finish_reason"),
        prompt_tokens=usage.get("prompt_tokens"),
        completion_tokens=usage.get("completion_tokens"),
        trace_split=reply.split,
    )


@dataclass(frozen=True)
class QueryJob:
    """One request to make: an input row, its replication, and the exact messages."""

    row_index: int
    replication: int
    row: dict[str, Any]
    messages: list[dict[str, str]]
    seed: int
    prompt_hash: str = ""  # of ``messages``; computed once per row (every record of the job carries it)


def plan_jobs(
    inputs: pd.DataFrame, spec: StudySpec, model: ModelSpec, sampling: SamplingSettings, replications: int
) -> list[QueryJob]:
    """Every (row, replication) request for one model, in input order."""
    jobs = []
    for row_index, row in enumerate(inputs.to_dict(orient="records")):
        messages = render_messages(spec.query_prompt, spec, row, system_role=model.system_role)
        prompt_hash = messages_hash(messages)
        for replication in range(replications):
            jobs.append(QueryJob(row_index, replication, row, messages, row_seed(sampling.seed, spec.number, row_index, replication),
                                 prompt_hash))
    return jobs


def _record(job: QueryJob, model: ModelSpec, spec: StudySpec, sampling: SamplingSettings, run_id: str) -> dict[str, Any]:
    return {
        **job.row,
        "model_name": model.name,
        "run_id": run_id,
        "row_index": job.row_index,
        "replication": job.replication,
        "seed": job.seed,
        "model_id": model.request_model,
        "template_hash": spec.query_prompt.hash,
        "prompt_hash": job.prompt_hash or messages_hash(job.messages),
        "temperature": sampling.temperature,
        "max_tokens": effective_max_tokens(model, sampling),
    }


async def query_one(
    job: QueryJob, client: LLMClient, model: ModelSpec, spec: StudySpec, sampling: SamplingSettings, run_id: str
) -> dict[str, Any]:
    """Make one request; return its output record with status 'ok' or 'failed' (never raises for a row)."""
    record = _record(job, model, spec, sampling, run_id)
    failed = dict(model_response=None, response_timestamp=None, processing_time_ms=None, reasoning_trace=None, trace_split=None,
                  finish_reason=None, prompt_tokens=None, completion_tokens=None, status="failed")
    try:
        response = await client.post_json(CHAT_PATH, build_chat_payload(model, job.messages, sampling, job.seed))
    except RequestFailed as exc:
        return {**record, **failed, "attempts": exc.attempts, "error": exc.reason}
    try:
        parsed = parse_chat_response(response.body, model.reasoning)
    except ResponseFormatError as exc:
        return {**record, **failed, "attempts": response.attempts, "error": str(exc)}
    reply = SplitReply(parsed.answer, parsed.reasoning_trace, parsed.trace_split)
    error = no_answer_reason(reply, parsed.finish_reason, record["max_tokens"])
    return {
        **record,
        "model_response": None if error else parsed.answer,  # a trace that never ended is not an answer: nothing to code
        "response_timestamp": response.received_at.isoformat(),
        "processing_time_ms": round(response.latency_ms, 3),
        "reasoning_trace": parsed.reasoning_trace,
        "trace_split": parsed.trace_split,
        "finish_reason": parsed.finish_reason,
        "prompt_tokens": parsed.prompt_tokens,
        "completion_tokens": parsed.completion_tokens,
        "attempts": response.attempts,
        "status": "failed" if error else "ok",
        "error": error,
    }


async def run_query_step(
    inputs: pd.DataFrame,
    spec: StudySpec,
    model: ModelSpec,
    client: LLMClient,
    sampling: SamplingSettings,
    checkpoint: AnyCheckpoint,
    run_id: str,
    replications: int = 1,
    progress: RowProgress = NoProgress(),
) -> StepOutcome:
    """Query every row x replication not already 'ok' in ``checkpoint``; return the full table.

    Rows that failed in an earlier run are retried. Failed rows are part of the returned
    table (status 'failed' with their error); see :func:`steps.outcome.enforce_failure_threshold`.
    """
    outcome = await run_resumable(
        plan_jobs(inputs, spec, model, sampling, replications),
        item_key=lambda job: (job.row_index, job.replication),
        is_done=lambda job, record: record.get("status") == "ok",
        work=lambda job: query_one(job, client, model, spec, sampling, run_id),
        window=client.concurrency, checkpoint=checkpoint, progress=progress, count_tokens=True,
        base=lambda job: _record(job, model, spec, sampling, run_id),
    )
    outcome.frame = outcome.frame.reindex(columns=raw_response_columns(spec.input_model))
    return outcome
