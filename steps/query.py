"""Experiment 1: one chat completion per input row x replication x model.

Pure halves (tested on recorded JSON): :func:`build_chat_payload` and
:func:`parse_chat_response`. :func:`run_query_step` drives them through the shared
:class:`~steps.llm_client.LLMClient`, checkpointing every finished row.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, Optional

import pandas as pd

from schemas.raw_responses import raw_response_columns
from schemas.settings import ModelSpec, SamplingSettings
from steps.checkpoint import AnyCheckpoint
from steps.llm_client import LLMClient, RequestFailed
from steps.outcome import NoProgress, RowProgress, StepOutcome, run_resumable
from steps.prompts import messages_hash, render_messages
from steps.studies import StudySpec

CHAT_PATH = "/v1/chat/completions"
DEFAULT_MAX_FAILED_FRACTION = 0.1


class ResponseFormatError(ValueError):
    """A 2xx chat response without the fields every OpenAI-compatible server sends."""


@dataclass(frozen=True)
class ParsedChat:
    """The useful parts of one chat completion."""

    answer: str
    reasoning_trace: Optional[str]
    finish_reason: Optional[str]
    prompt_tokens: Optional[int]
    completion_tokens: Optional[int]


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


_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)


def split_reasoning(content: str) -> tuple[str, Optional[str]]:
    """Split a reasoning model's '<think>...</think>' trace off its answer.

    Handles a trace whose opening tag was part of the prompt (only '</think>' in the
    output) and a trace cut off before '</think>' (then the answer is empty).
    """
    traces = [m.strip() for m in _THINK.findall(content)]
    rest = _THINK.sub("", content)
    if "</think>" in rest:
        before, rest = rest.rsplit("</think>", 1)
        traces.insert(0, before.replace("<think>", "").strip())
    elif "<think>" in rest:
        rest, unfinished = rest.split("<think>", 1)
        traces.append(unfinished.strip())
    return rest.strip(), ("\n\n".join(traces) if traces else None)


def parse_chat_response(body: dict[str, Any]) -> ParsedChat:
    """Answer, reasoning trace, finish reason and token counts from a chat completion body.

    A trace the server already split off (vLLM's ``reasoning_content``/``reasoning``)
    is used as is; otherwise ``<think>`` tags are split off the content.
    """
    try:
        choice = body["choices"][0]
        message = choice["message"]
    except (KeyError, IndexError, TypeError) as exc:
        raise ResponseFormatError("response has no choices[0].message") from exc
    content = message.get("content") or ""
    if not isinstance(content, str):
        raise ResponseFormatError("choices[0].message.content is not text")
    answer, trace = split_reasoning(content)
    server_trace = message.get("reasoning_content") or message.get("reasoning")
    if server_trace:
        trace = server_trace.strip() if not trace else f"{server_trace.strip()}\n\n{trace}"
    usage = body.get("usage") or {}
    return ParsedChat(
        answer=answer,
        reasoning_trace=trace,
        finish_reason=choice.get("finish_reason"),
        prompt_tokens=usage.get("prompt_tokens"),
        completion_tokens=usage.get("completion_tokens"),
    )


@dataclass(frozen=True)
class QueryJob:
    """One request to make: an input row, its replication, and the exact messages."""

    row_index: int
    replication: int
    row: dict[str, Any]
    messages: list[dict[str, str]]
    seed: int


def plan_jobs(
    inputs: pd.DataFrame, spec: StudySpec, model: ModelSpec, sampling: SamplingSettings, replications: int
) -> list[QueryJob]:
    """Every (row, replication) request for one model, in input order."""
    jobs = []
    for row_index, row in enumerate(inputs.to_dict(orient="records")):
        messages = render_messages(spec.query_prompt, spec, row, system_role=model.system_role)
        for replication in range(replications):
            jobs.append(QueryJob(row_index, replication, row, messages, row_seed(sampling.seed, spec.number, row_index, replication)))
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
        "prompt_hash": messages_hash(job.messages),
        "temperature": sampling.temperature,
        "max_tokens": effective_max_tokens(model, sampling),
    }


async def query_one(
    job: QueryJob, client: LLMClient, model: ModelSpec, spec: StudySpec, sampling: SamplingSettings, run_id: str
) -> dict[str, Any]:
    """Make one request; return its output record with status 'ok' or 'failed' (never raises for a row)."""
    record = _record(job, model, spec, sampling, run_id)
    failed = dict(model_response=None, response_timestamp=None, processing_time_ms=None, reasoning_trace=None,
                  finish_reason=None, prompt_tokens=None, completion_tokens=None, status="failed")
    try:
        response = await client.post_json(CHAT_PATH, build_chat_payload(model, job.messages, sampling, job.seed))
    except RequestFailed as exc:
        return {**record, **failed, "attempts": exc.attempts, "error": exc.reason}
    try:
        parsed = parse_chat_response(response.body)
    except ResponseFormatError as exc:
        return {**record, **failed, "attempts": response.attempts, "error": str(exc)}
    error = None
    if not parsed.answer:
        error = "empty answer" + (
            f": the reasoning trace was cut off at max_tokens={record['max_tokens']}; raise --max-tokens"
            if parsed.reasoning_trace and parsed.finish_reason == "length" else ""
        )
    return {
        **record,
        "model_response": parsed.answer,
        "response_timestamp": response.received_at.isoformat(),
        "processing_time_ms": round(response.latency_ms, 3),
        "reasoning_trace": parsed.reasoning_trace,
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
