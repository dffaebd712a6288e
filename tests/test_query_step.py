"""The query step over real HTTP against the FAKE server: faults, resume, reasoning, threshold."""

from __future__ import annotations

import asyncio

import httpx
import pandas as pd
import pytest

from schemas.inputs import Study1Input
from schemas.raw_responses import raw_response_columns
from schemas.settings import ModelSpec, SamplingSettings
from steps.checkpoint import Checkpoint
from steps.errors import StepFailedError
from steps.llm_client import LLMClient, RetryPolicy
from steps.outcome import enforce_failure_threshold
from steps.query import run_query_step
from tests.fakes.fake_openai_server import FakeOpenAIServer

FAST_RETRY = RetryPolicy(max_attempts=4, base_delay_s=0.01, max_delay_s=0.05)
FAKE_MODEL = ModelSpec(name="fake-model", hf_id="fake-model")


def _run(server, table, spec, checkpoint_path, replications=1, timeout=5.0, concurrency=4, model=FAKE_MODEL, sampling=SamplingSettings()):
    async def go():
        async with httpx.AsyncClient(timeout=httpx.Timeout(timeout)) as http:
            client = LLMClient(http, [server.url], concurrency, FAST_RETRY)
            with Checkpoint(checkpoint_path, {"test": 1}) as checkpoint:
                return await run_query_step(table, spec, model, client, sampling, checkpoint, "run-test", replications)
    return asyncio.run(go())


@pytest.fixture
def many_rows(study1_table):
    """36 distinct rows (the 6 examples x 6 participant ids)."""
    frames = []
    for pid in range(6):
        frame = study1_table.frame.copy()
        frame["participant_id"] = pid
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def test_every_row_ends_done_or_failed_under_faults(tmp_path, study1, many_rows):
    script = ["500", "429", "reset", "truncated", "malformed", "503", "timeout", "no_choices", "ok", "reset", "500", "500", "500"]
    rows = many_rows.copy()
    rows.loc[3, "speach"] = "FAIL-ALWAYS " + rows.loc[3, "speach"]
    rows.loc[7, "speach"] = "REJECT " + rows.loc[7, "speach"]
    # the 'timeout' fault hangs far longer than the client waits, which is itself far longer than any answer takes on a
    # loaded machine: only that one attempt times out
    with FakeOpenAIServer(fault_script=script, hang_s=60.0) as server:
        outcome = _run(server, rows, study1, tmp_path / "cp.jsonl", timeout=5.0)
    frame = outcome.frame
    assert list(frame.columns) == raw_response_columns(Study1Input)
    assert len(frame) == 36 and sorted(frame.row_index) == list(range(36))  # none lost, none duplicated
    assert set(frame.status) <= {"ok", "failed"}
    failed = frame[frame.status == "failed"].set_index("row_index")
    assert "HTTP 500" in failed.loc[3, "error"] and "after 4 attempts" in failed.loc[3, "error"]
    assert failed.loc[7, "error"] == "HTTP 400: fake 400" and failed.loc[7, "attempts"] == 1
    ok = frame[frame.status == "ok"]
    assert ok.model_response.str.startswith("Initial Answer:").all()
    assert (ok.processing_time_ms > 0).all() and ok.response_timestamp.notna().all()
    assert failed.model_response.isna().all()
    # only the schema-less 200 ("no_choices") may fail besides the two poisoned rows: it is not retried
    assert set(failed.index) - {3, 7} <= set(failed.index[failed.error.str.contains("no choices")])


def test_rerun_retries_only_failed_rows(tmp_path, study1, many_rows):
    rows = many_rows.copy()
    rows.loc[5, "speach"] = "FAIL-ALWAYS " + rows.loc[5, "speach"]
    checkpoint = tmp_path / "cp.jsonl"
    with FakeOpenAIServer() as server:
        first = _run(server, rows, study1, checkpoint)
        assert (first.done, first.failed) == (35, 1)
        rows.loc[5, "speach"] = many_rows.loc[5, "speach"]  # the cause is fixed (same row key)
        requests_before = server.chat_requests
        second = _run(server, rows, study1, checkpoint)
        assert server.chat_requests - requests_before == 1
    assert (second.done, second.failed, second.resumed) == (36, 0, 35)


def test_replications_get_their_own_seeds(tmp_path, study1, study1_table):
    with FakeOpenAIServer() as server:
        outcome = _run(server, study1_table.frame, study1, tmp_path / "cp.jsonl", replications=3)
    frame = outcome.frame
    assert len(frame) == 18
    assert all(sorted(reps) == [0, 1, 2] for reps in frame.groupby("row_index").replication.apply(list))
    assert frame.seed.nunique() == 18
    assert frame.groupby("row_index").model_response.nunique().eq(3).all()  # different seeds, different samples


REASONING = ModelSpec(name="fake-model", hf_id="fake-model", reasoning=True)


@pytest.mark.parametrize("mode,split", [
    pytest.param("tags", "think-tags", id="model-opens-the-block"),
    pytest.param("prompt-opened", "think-tags", id="prompt-opened-the-block"),
    pytest.param("server", "server", id="server-split"),
])
def test_a_finished_trace_is_split_off_the_answer(tmp_path, study1, study1_table, mode, split):
    with FakeOpenAIServer(reasoning=mode) as server:
        outcome = _run(server, study1_table.frame, study1, tmp_path / "cp.jsonl", model=REASONING)
    frame = outcome.frame
    assert (frame.status == "ok").all() and (frame.trace_split == split).all()
    assert frame.model_response.str.startswith("Initial Answer:").all() and not frame.model_response.str.contains("think").any()
    assert frame.reasoning_trace.str.startswith("Let me think").all() and not frame.reasoning_trace.str.contains("think>").any()


@pytest.mark.parametrize("mode,split", [
    pytest.param("tags", "think-tags", id="model-opened-the-block"),
    pytest.param("prompt-opened", "think-tags", id="prompt-opened-the-block"),
    pytest.param("server", "server", id="server-split"),
])
def test_a_trace_cut_off_at_max_tokens_has_no_answer(tmp_path, study1, study1_table, mode, split):
    """The reply ends inside the trace (no </think>, finish_reason 'length'): the row fails, nothing goes to model_response."""
    with FakeOpenAIServer(reasoning=mode, trace_words=40) as server:
        outcome = _run(server, study1_table.frame, study1, tmp_path / "cp.jsonl", model=REASONING,
                       sampling=SamplingSettings(max_tokens=60))
    frame = outcome.frame
    assert (frame.status == "failed").all() and frame.model_response.isna().all()
    assert (frame.finish_reason == "length").all() and (frame.trace_split == split).all()
    assert frame.reasoning_trace.str.startswith("Let me think about").all()  # kept to look at
    assert frame.error.str.contains("cut off at max_tokens=60 before it ended .no </think>.; raise --max-tokens").all()
    with FakeOpenAIServer(reasoning=mode, trace_words=40) as server:  # room to finish: the same rows are answered
        again = _run(server, study1_table.frame, study1, tmp_path / "cp2.jsonl", model=REASONING, sampling=SamplingSettings(max_tokens=512))
    assert (again.frame.status == "ok").all() and (again.frame.finish_reason == "stop").all()


def test_a_reasoning_models_answer_without_a_trace_is_not_taken_for_an_answer(tmp_path, study1, study1_table):
    """A model registered reasoning: true whose reply has no </think> never ended its trace (e.g. a template mismatch)."""
    with FakeOpenAIServer() as server:  # answers without any trace
        outcome = _run(server, study1_table.frame.head(2), study1, tmp_path / "cp.jsonl", model=REASONING)
    assert (outcome.frame.status == "failed").all() and outcome.frame.model_response.isna().all()
    assert outcome.frame.error.str.contains("the reasoning trace never ended").all()


def test_trace_split_is_empty_for_a_model_without_traces(tmp_path, study1, study1_table):
    with FakeOpenAIServer() as server:
        outcome = _run(server, study1_table.frame.head(2), study1, tmp_path / "cp.jsonl")
    assert (outcome.frame.status == "ok").all() and outcome.frame.trace_split.isna().all() and outcome.frame.reasoning_trace.isna().all()


def test_failure_threshold(tmp_path, study1, many_rows):
    rows = many_rows.copy()
    for i in range(5):
        rows.loc[i, "speach"] = "REJECT " + rows.loc[i, "speach"]
    with FakeOpenAIServer() as server:
        outcome = _run(server, rows, study1, tmp_path / "cp.jsonl")
    enforce_failure_threshold(outcome, 0.2, "fake study 1")  # 5/36 = 14% is allowed
    with pytest.raises(StepFailedError, match=r"5 of 36 rows failed .* 5 x HTTP 400: fake 400"):
        enforce_failure_threshold(outcome, 0.1, "fake study 1")
