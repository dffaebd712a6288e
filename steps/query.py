"""Experiment 1: one chat completion per input row x replication x model.

Pure halves (tested on recorded JSON): :func:`build_chat_payload` and
:func:`parse_chat_response`. :func:`run_query_step` drives them through the shared
:class:`~steps.llm_client.LLMClient`, checkpointing every finished row.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import pandas as pd

from schemas.raw_responses import raw_response_columns
from schemas.settings import ModelSpec, SamplingSettings
from steps.checkpoint import Checkpoint
from steps.errors import StepFailedError
from steps.llm_client import LLMClient, RequestFailed, completed_in_window
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


@dataclass
class StepOutcome:
    """What a step produced and how it went."""

    frame: pd.DataFrame
    done: int
    failed: int
    resumed: int
    wall_s: float
    completion_tokens: int
    status_column: str = "status"
    error_column: str = "error"

    @property
    def total(self) -> int:
        return self.done + self.failed


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
    checkpoint: Checkpoint,
    run_id: str,
    replications: int = 1,
    on_row: Callable[[dict[str, Any]], None] = lambda record: None,
) -> StepOutcome:
    """Query every row x replication not already 'ok' in ``checkpoint``; return the full table.

    Each finished row (ok or failed) is appended to the checkpoint before the next is
    counted, so a crash loses at most the requests in flight. Rows that failed in an
    earlier run are retried. Failed rows are part of the returned table (status
    'failed' with their error); see :func:`enforce_failure_threshold`.
    """
    started = time.perf_counter()
    jobs = plan_jobs(inputs, spec, model, sampling, replications)
    finished = checkpoint.load()
    todo = [j for j in jobs if finished.get((j.row_index, j.replication), {}).get("status") != "ok"]
    resumed = len(jobs) - len(todo)
    tokens = 0

    async def work(job: QueryJob) -> dict[str, Any]:
        return await query_one(job, client, model, spec, sampling, run_id)

    async for record in completed_in_window(todo, work, client.concurrency):
        checkpoint.append(record)
        finished[(record["row_index"], record["replication"])] = record
        tokens += record.get("completion_tokens") or 0
        on_row(record)

    records = [finished[(j.row_index, j.replication)] for j in jobs]
    frame = pd.DataFrame(records).reindex(columns=raw_response_columns(spec.input_model))
    failed = int((frame["status"] == "failed").sum())
    return StepOutcome(frame, len(records) - failed, failed, resumed, time.perf_counter() - started, tokens)


def enforce_failure_threshold(outcome: StepOutcome, max_failed_fraction: float, label: str) -> None:
    """Raise StepFailedError when more than ``max_failed_fraction`` of the rows failed.

    Call it after the step's outputs are saved: the finished rows are kept, and a
    re-run retries only the failed ones.
    """
    if not outcome.total or outcome.failed / outcome.total <= max_failed_fraction:
        return
    frame = outcome.frame
    reasons = frame.loc[frame[outcome.status_column] == "failed", outcome.error_column].value_counts().head(3)
    top = "; ".join(f"{n} x {reason}" for reason, n in reasons.items())
    raise StepFailedError(
        f"{label}: {outcome.failed} of {outcome.total} rows failed (more than the allowed "
        f"{max_failed_fraction:.0%}). Most common: {top}. Finished rows are saved; fix the cause "
        "and re-run the same command to retry only the failed rows."
    )
