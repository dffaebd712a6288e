"""Experiment 2 step against the FAKE server: prompts, seed columns, summaries, failures."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest

from pipeline.registry import load_registry
from schemas.probabilities import ASSESSMENTS, FRAMES, PERCENT_BINS, PROBABILITY_ROW_MODELS, SEED_COLUMN_COUNT, STATES
from schemas.settings import ModelSpec
from steps.checkpoint import Checkpoint
from steps.errors import ServerError
from steps.llm_client import LLMClient, RetryPolicy
from steps.probabilities import SMOKE_POLICY, run_probability_step, scoring_prompt
from steps.tables import coerce_to_schema
from tests.fakes.fake_openai_server import FakeOpenAIServer

FAKE = ModelSpec(name="fake-model", hf_id="fake-model")
FAST = RetryPolicy(max_attempts=2, base_delay_s=0.01, max_delay_s=0.02)


def _run(server, frame, spec, path, method="exact"):
    async def go():
        async with httpx.AsyncClient(timeout=10) as http:
            client = LLMClient(http, [server.url], 4, FAST)
            with Checkpoint(path, {"t": 1}) as checkpoint:
                return await run_probability_step(frame, spec, FAKE, client, checkpoint, "run-t", method)
    return asyncio.run(go())


def test_study1_columns_are_the_seeds_and_distributions_are_consistent(tmp_path, study1, study1_table):
    with FakeOpenAIServer() as server:
        outcome = _run(server, study1_table.frame, study1, tmp_path / "c.jsonl")
    frame = coerce_to_schema(outcome.frame, PROBABILITY_ROW_MODELS["study1_states"])
    seed = ["participant_id", "story_shortname", "access", "observe", "model_name"]
    seed += [f"state{k}_prob_{p}" for k in STATES for p in PERCENT_BINS]
    seed += [f"state{k}_{s}" for k in STATES for s in ("mean", "std", "entropy")]
    seed += ["prob_knowledge_yes", "prob_knowledge_no", "entropy_knowledge"]
    assert list(frame.columns)[:SEED_COLUMN_COUNT[1]] == seed and len(seed) == 64
    assert set(study1.input_model.model_fields) <= set(frame.columns)  # the 9 inputs (68 + model_name)
    assert (frame.status == "ok").all()
    for k in STATES:
        probs = frame[[f"state{k}_prob_{p}" for p in PERCENT_BINS]].to_numpy(dtype=float)
        assert ((probs >= 0) & (probs <= 1)).all()
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
        mean = (probs * np.array(PERCENT_BINS)).sum(axis=1)
        np.testing.assert_allclose(frame[f"state{k}_mean"].to_numpy(dtype=float), mean, atol=1e-9)
        std = np.sqrt((probs * (np.array(PERCENT_BINS) - mean[:, None]) ** 2).sum(axis=1))
        np.testing.assert_allclose(frame[f"state{k}_std"].to_numpy(dtype=float), std, atol=1e-9)
        entropy = -(probs * np.log2(probs)).sum(axis=1)
        np.testing.assert_allclose(frame[f"state{k}_entropy"].to_numpy(dtype=float), entropy, atol=1e-9)
        assert frame[f"state{k}_option_mass"].between(0, 1).all()
    np.testing.assert_allclose((frame.prob_knowledge_yes + frame.prob_knowledge_no).to_numpy(dtype=float), 1.0, atol=1e-9)


def test_study2_marginals_come_from_the_joint(tmp_path, study2, study2_table):
    with FakeOpenAIServer() as server:
        outcome = _run(server, study2_table.frame, study2, tmp_path / "c.jsonl")
    frame = coerce_to_schema(outcome.frame, PROBABILITY_ROW_MODELS["study2_utterances"])
    assert list(frame.columns)[:5] == ["Participant_ID", "Domain", "Goal_simplified", "State_number", "model_name"]
    assert SEED_COLUMN_COUNT[2] == 22
    joint = frame[[f"prob_{f}_{a}" for f in FRAMES for a in ASSESSMENTS]].to_numpy(dtype=float)
    np.testing.assert_allclose(joint.sum(axis=1), 1.0, atol=1e-9)
    np.testing.assert_allclose(frame.prob_was.to_numpy(dtype=float), joint[:, :4].sum(axis=1), atol=1e-12)
    np.testing.assert_allclose(frame.prob_good.to_numpy(dtype=float), joint[:, 2] + joint[:, 6], atol=1e-12)
    np.testing.assert_allclose(frame.entropy_joint.to_numpy(dtype=float), -(joint * np.log2(joint)).sum(axis=1), atol=1e-9)
    assert frame.entropy_frame.le(1.0 + 1e-12).all() and frame.entropy_assessment.le(2.0 + 1e-12).all()


def test_a_row_that_cannot_be_scored_is_failed_not_filled(tmp_path, study2, study2_table):
    rows = study2_table.frame.copy()
    rows.loc[2, "Scenario"] = "FAIL-ALWAYS " + rows.loc[2, "Scenario"]
    with FakeOpenAIServer() as server:
        outcome = _run(server, rows, study2, tmp_path / "c.jsonl")
    failed = outcome.frame[outcome.frame.status == "failed"]
    assert list(failed.row_index) == [2] and "utterance: HTTP 500" in failed.error.iloc[0]
    assert "prob_was" not in failed.columns or failed.prob_was.isna().all()


def test_server_without_prompt_logprobs_is_refused_before_any_row(tmp_path, study1, study1_table):
    with FakeOpenAIServer(prompt_logprobs=False) as server:
        with pytest.raises(ServerError, match="does not return prompt-token log-probabilities"):
            _run(server, study1_table.frame, study1, tmp_path / "c.jsonl")
        assert server.completion_requests == SMOKE_POLICY.max_attempts  # the check only, no row


@pytest.mark.parametrize("fault", ["no_choices", "null_logprobs", "positive_logprob"])
def test_one_malformed_reply_to_the_logprob_check_is_retried(tmp_path, study1, study1_table, fault):
    """A single bad reply to the start-up check does not abort the run (it used to: exit 4, wrong message)."""
    with FakeOpenAIServer(completion_faults=[fault]) as server:
        outcome = _run(server, study1_table.frame.head(2), study1, tmp_path / "c.jsonl")
    assert (outcome.frame.status == "ok").all()


def test_a_server_that_keeps_answering_malformed_replies_is_named_as_such(tmp_path, study1, study1_table):
    with FakeOpenAIServer(completion_faults=["no_choices"] * 5) as server:
        with pytest.raises(ServerError) as caught:
            _run(server, study1_table.frame, study1, tmp_path / "c.jsonl")
    assert "without a usable reply" in str(caught.value) and "malformed reply" in str(caught.value)
    assert "does not return prompt-token" not in str(caught.value)


def test_first_token_method_records_problems(tmp_path, study1, study1_table):
    with FakeOpenAIServer() as server:
        outcome = _run(server, study1_table.frame.head(2), study1, tmp_path / "c.jsonl", method="first-token")
    # the fake's top-k holds '1', '2', '5' and ' ': base-model options ' 10%' etc. all start with ' '
    assert (outcome.frame.status == "failed").all()
    assert outcome.frame.error.str.contains("share the first token ' '").all()


def test_resume_scores_only_missing_rows(tmp_path, study2, study2_table):
    path = tmp_path / "c.jsonl"
    with FakeOpenAIServer() as server:
        _run(server, study2_table.frame.head(3), study2, path)
        before = server.completion_requests
        outcome = _run(server, study2_table.frame, study2, path)
        assert server.completion_requests - before == 1 + 5  # smoke check + the 5 new rows
    assert outcome.resumed == 3 and outcome.done == 8


def test_scoring_prompts_for_chat_and_base_models(study1, study1_table):
    row = study1_table.frame.iloc[0].to_dict()
    question = study1.probability_questions[0]
    base_context, base_options = scoring_prompt(question, study1, row, {"state": 2}, load_registry()["gemma-3-270m"])
    assert base_context.endswith("exactly 2? Answer with a percentage from 0% to 100% in steps of 10%, and nothing else.\nAnswer:")
    assert base_options["70"] == [" 70%"] and "<br>" not in base_context
    chat_context, chat_options = scoring_prompt(question, study1, row, {"state": 2}, load_registry()["gemma-2-9b-it"])
    assert chat_context.startswith("<start_of_turn>user\nYou are a helpful assistant") and chat_context.endswith("<start_of_turn>model\n")
    assert chat_options["70"] == ["70%"]
    assert row["speachQ"] in chat_context
    knowledge = study1.probability_questions[1]
    _, options = scoring_prompt(knowledge, study1, row, {}, load_registry()["llama-3.1-8b-instruct"])
    assert options == {"yes": ["yes", "Yes"], "no": ["no", "No"]}


def test_study2_distribution_and_mass_equal_an_independent_computation(tmp_path, study2, study2_table):
    """Not a sum-to-1 check (a softmax always sums to 1): the probabilities and the unnormalised option mass are
    recomputed here from the FAKE server's own definition of its log-probabilities, without the scoring code."""
    import math

    from tests.fakes.fake_openai_server import fake_logprob, fake_tokens

    with FakeOpenAIServer() as server:
        outcome = _run(server, study2_table.frame.head(2), study2, tmp_path / "c.jsonl")
    (question,) = study2.probability_questions
    for index, row in enumerate(study2_table.frame.head(2).to_dict(orient="records")):
        context, options = scoring_prompt(question, study2, row, {}, FAKE)
        scores = {}
        for label, continuations in options.items():
            per_form = []
            for continuation in continuations:
                tokens = fake_tokens(context + continuation)
                starts = [sum(len(t) for t in tokens[:i]) for i in range(len(tokens))]
                per_form.append(sum(fake_logprob("".join(tokens[:i]), tokens[i]) for i in range(len(tokens)) if starts[i] >= len(context)))
            scores[label] = math.log(sum(math.exp(s) for s in per_form))
        mass = sum(math.exp(s) for s in scores.values())
        got = outcome.frame.iloc[index]
        assert got["option_mass"] == pytest.approx(mass, rel=1e-9) and 0 < mass < 1
        for label, score in scores.items():
            assert got[f"prob_{label}"] == pytest.approx(math.exp(score) / mass, rel=1e-9)
