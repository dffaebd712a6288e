"""Experiment 2 step against the FAKE server: prompts, seed columns, summaries, failures."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest

from pipeline.cli import main
from pipeline.registry import load_registry, resolve_model
from schemas.probabilities import ASSESSMENTS, FRAMES, PERCENT_BINS, PROBABILITY_ROW_MODELS, SEED_COLUMN_COUNT, STATES
from schemas.settings import ModelSpec
from steps.checkpoint import Checkpoint
from steps.errors import ConfigError, ServerError
from steps.llm_client import LLMClient, RetryPolicy
from steps.probabilities import SMOKE_POLICY, check_scoring_method, run_probability_step, scoring_messages, seed_literal_prompt
from steps.scoring import OptionIdsError
from steps.server_prompt import ReplyTokenizer, minimum_prompt_tokens, question_ids, reply_prefix_rest
from steps.tables import coerce_to_schema
from tests.fakes.fake_openai_server import FakeOpenAIServer, fake_chat_template

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
    state_question, knowledge_question = study1.probability_questions
    for index, row in enumerate(study1_table.frame.to_dict(orient="records")):  # each bin: its own option's probability
        for k in STATES:
            expected, mass = _independent_distribution(study1, state_question, row, {"state": k})
            assert [frame[f"state{k}_prob_{p}"].iloc[index] for p in PERCENT_BINS] == pytest.approx(
                [expected[str(p)] for p in PERCENT_BINS], rel=1e-9)
            assert frame[f"state{k}_option_mass"].iloc[index] == pytest.approx(mass, rel=1e-9)
        expected, mass = _independent_distribution(study1, knowledge_question, row, {})  # 'yes' + 'Yes', 'no' + 'No'
        assert frame.prob_knowledge_yes.iloc[index] == pytest.approx(expected["yes"], rel=1e-9)
        assert frame.knowledge_option_mass.iloc[index] == pytest.approx(mass, rel=1e-9)
    for k in STATES:  # the summaries are those of the distribution
        probs = frame[[f"state{k}_prob_{p}" for p in PERCENT_BINS]].to_numpy(dtype=float)
        mean = (probs * np.array(PERCENT_BINS)).sum(axis=1)
        np.testing.assert_allclose(frame[f"state{k}_mean"].to_numpy(dtype=float), mean, atol=1e-9)
        std = np.sqrt((probs * (np.array(PERCENT_BINS) - mean[:, None]) ** 2).sum(axis=1))
        np.testing.assert_allclose(frame[f"state{k}_std"].to_numpy(dtype=float), std, atol=1e-9)
        entropy = -(probs * np.log2(probs)).sum(axis=1)
        np.testing.assert_allclose(frame[f"state{k}_entropy"].to_numpy(dtype=float), entropy, atol=1e-9)


def test_study2_marginals_come_from_the_joint(tmp_path, study2, study2_table):
    with FakeOpenAIServer() as server:
        outcome = _run(server, study2_table.frame, study2, tmp_path / "c.jsonl")
    frame = coerce_to_schema(outcome.frame, PROBABILITY_ROW_MODELS["study2_utterances"])
    assert list(frame.columns)[:5] == ["Participant_ID", "Domain", "Goal_simplified", "State_number", "model_name"]
    assert SEED_COLUMN_COUNT[2] == 22
    joint = frame[[f"prob_{f}_{a}" for f in FRAMES for a in ASSESSMENTS]].to_numpy(dtype=float)  # the joint itself: below
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


def test_first_token_method_marks_incomplete_states_instead_of_summarizing_them(tmp_path, study1, study1_table):
    with FakeOpenAIServer() as server:
        outcome = _run(server, study1_table.frame.head(2), study1, tmp_path / "c.jsonl", method="first-token")
    # the fake's top-k holds '1', '2', '5', 'Yes', 'No': '10%'/'100%' collide on '1', most bins are missing
    frame = outcome.frame
    assert (frame.status == "ok").all()
    assert frame.state0_prob_10.isna().all() and frame.state0_prob_20.notna().all()
    assert frame.state0_mean.isna().all() and frame.state0_std.isna().all()  # not computed over 2 of 11 bins as if complete
    assert frame.first_token_problems.str.contains("10, 100 share the first token '1'").all()
    assert frame.first_token_problems.str.contains("state0: incomplete distribution, its mean/std are not computed").all()


def test_resume_scores_only_missing_rows(tmp_path, study2, study2_table):
    path = tmp_path / "c.jsonl"
    with FakeOpenAIServer() as server:
        _run(server, study2_table.frame.head(3), study2, path)
        before = server.completion_requests
        outcome = _run(server, study2_table.frame, study2, path)
        assert server.completion_requests - before == 1 + 5  # smoke check + the 5 new rows
    assert outcome.resumed == 3 and outcome.done == 8


def test_scoring_messages_fold_the_system_text_where_the_model_has_no_system_role(study1, study1_table):
    row = study1_table.frame.iloc[0].to_dict()
    question = study1.probability_questions[0]
    folded = scoring_messages(question, study1, row, {"state": 2}, load_registry()["gemma-2-9b-it"])
    assert [m["role"] for m in folded] == ["user"] and folded[0]["content"].startswith("You are a helpful assistant")
    assert "exactly 2? Answer with a percentage" in folded[0]["content"] and "<br>" not in folded[0]["content"]
    system = scoring_messages(question, study1, row, {"state": 2}, load_registry()["llama-3.1-8b-instruct"])
    assert [m["role"] for m in system] == ["system", "user"]


def _never_seen_template(messages):
    """A chat format no model and no code of the project knows."""
    return "<s>" + "".join(f"[[turn]]{m['role'].upper()}: {m['content']}\n" for m in messages) + "[[reply]]\n"


def test_a_model_outside_the_registry_is_scored_under_its_servers_template(tmp_path, study1, study1_table):
    model = resolve_model("acme/new-chat-7b", external=True)  # not in the registry: nothing about its template is known here
    frame = study1_table.frame.head(1)
    with FakeOpenAIServer(model="acme/new-chat-7b", chat_template=_never_seen_template) as server:
        async def go():
            async with httpx.AsyncClient(timeout=10) as http:
                client = LLMClient(http, [server.url], 4, FAST)
                with Checkpoint(tmp_path / "c.jsonl", {"t": 1}) as checkpoint:
                    return await run_probability_step(frame, study1, model, client, checkpoint, "run-t")
        outcome = asyncio.run(go())
        assert (outcome.frame.status == "ok").all()
        row = frame.iloc[0].to_dict()
        messages = scoring_messages(study1.probability_questions[1], study1, row, {}, model)
        assert ("/tokenize", {"model": "acme/new-chat-7b", "messages": messages, "add_generation_prompt": True,
                              "add_special_tokens": False}) in server.scoring_requests  # the system message goes as in Experiment 1
        expected_context = server.token_ids(_never_seen_template(messages))
        knowledge = [body for path, body in server.scoring_requests
                     if path == "/v1/completions" and body.get("echo") and len(body["prompt"]) == 4]  # yes, Yes, no, No
        assert len(knowledge) == 2 and knowledge[0] == knowledge[1]  # the start-up check scores the first row's question, then the row
        for prompt in knowledge[0]["prompt"]:  # every option after exactly the server-rendered context, by ids
            assert prompt[: len(expected_context)] == expected_context
        options = ["".join(server._pieces[t] for t in prompt[len(expected_context):]) for prompt in knowledge[0]["prompt"]]
        assert options == ["yes", "Yes", "no", "No"]


def test_context_ids_are_identical_across_options_and_options_are_located_by_ids(study2, study2_table):
    row = study2_table.frame.iloc[0].to_dict()
    question = study2.probability_questions[0]
    model = ModelSpec(name="fake-model", hf_id="fake-model", system_role=False)
    messages = scoring_messages(question, study2, row, {}, model)
    with FakeOpenAIServer() as server:
        async def go():
            async with httpx.AsyncClient(timeout=10) as http:
                return await question_ids(LLMClient(http, [server.url], 4, FAST), model, messages, question.options)
        q = asyncio.run(go())
        assert list(q.context) == server.token_ids(fake_chat_template(messages))  # BOS written by the template
        prompts = q.prompts()
        assert len(prompts) == 8 and all(ids[: len(q.context)] == list(q.context) for _, ids in prompts)
        assert "".join(server._pieces[t] for t in q.options["wasnt_good"][0]) == "It wasn't good"
    assert minimum_prompt_tokens(q) < sum(len(ids) for _, ids in prompts)


def test_later_rows_take_option_ids_from_the_cache_with_the_same_ids_and_the_same_errors(study2, study2_table):
    """After the first row every option's ids are known: later rows build them without a request or a task, identically."""
    question = study2.probability_questions[0]
    for reply_prefix, merges in (("", False), ("Reply", True)):  # the FAKE tokenizer joins 'Reply' + 'It'
        model = ModelSpec(name="fake-model", hf_id="fake-model", reply_prefix=reply_prefix)
        rows = [scoring_messages(question, study2, study2_table.frame.iloc[i].to_dict(), {}, model) for i in range(3)]
        with FakeOpenAIServer() as server:
            async def go():
                async with httpx.AsyncClient(timeout=10) as http:
                    client = LLMClient(http, [server.url], 4, FAST)
                    replies, out = ReplyTokenizer(client, model), []
                    for messages in rows:
                        try:
                            out.append(await question_ids(client, model, messages, question.options, replies))
                        except OptionIdsError as exc:
                            out.append(str(exc))
                        out.append(server.tokenize_requests)
                    return out
            first, after_first, second, after_second, third, after_third = asyncio.run(go())
        assert after_second - after_first == after_third - after_second == 1  # the chat prompt only: options come from the cache
        if merges:
            assert first == second == third and "boundary merge" in first
        else:
            assert first.options == second.options == third.options and len(first.options) == 8


def test_a_boundary_merge_is_detected_not_guessed(tmp_path, study2, study2_table):
    """The option is the reply's continuation: it can merge with the reply prefix (stopped before any row), never with the prompt."""
    merging = ModelSpec(name="fake-model", hf_id="fake-model", reply_prefix="Reply")  # the FAKE tokenizer joins 'Reply' + 'It'
    with FakeOpenAIServer() as server:
        async def go():
            async with httpx.AsyncClient(timeout=10) as http:
                with Checkpoint(tmp_path / "c.jsonl", {"t": 1}) as checkpoint:
                    return await run_probability_step(study2_table.frame.head(2), study2, merging, LLMClient(http, [server.url], 4, FAST),
                                                      checkpoint, "run-t")
        with pytest.raises(ConfigError, match=r"boundary merge: .* reply prefix 'Reply' with the start of the option 'It was terrible'"):
            asyncio.run(go())
        assert server.completion_requests == 0

    def ends_in_a_word(messages):  # a prompt whose text would merge with 'It': the model's reply starts a new token all the same
        return fake_chat_template(messages) + "Reply"

    with FakeOpenAIServer(chat_template=ends_in_a_word) as server:
        outcome = _run(server, study2_table.frame.head(2), study2, tmp_path / "c2.jsonl")
        prompts = [ids for path, body in server.scoring_requests if path == "/v1/completions" for ids in body["prompt"]]
        assert (outcome.frame.status == "ok").all()
    assert prompts
    for ids in prompts:
        pieces = [server._pieces[t] for t in ids]
        end = len(pieces) - 1 - pieces[::-1].index("Reply")  # the prompt's last token, then the option's own tokens
        assert pieces[end + 1] == "It" and "".join(pieces[end + 1:]) in {f for forms in study2.probability_questions[0].options.values()
                                                                         for f in forms}


def test_an_impossible_logprob_fails_the_row_with_the_reason(tmp_path, study2, study2_table):
    with FakeOpenAIServer(completion_faults=["ok", "positive_logprob"]) as server:  # the start-up check's reply, then the row's
        outcome = _run(server, study2_table.frame.head(1), study2, tmp_path / "c.jsonl")
    assert (outcome.frame.status == "failed").all()
    assert outcome.frame.error.str.contains("utterance: a token of option 'was_terrible' has an impossible log-probability 3.0").all()


def test_a_server_that_always_gives_an_impossible_logprob_is_stopped_before_any_row(tmp_path, study1, study1_table):
    with FakeOpenAIServer(logprob_overrides={"yes": 3.0}) as server:
        with pytest.raises(ServerError, match="log-probability check 3 times without a usable reply: malformed reply .a token of "
                                              "option 'yes' has an impossible log-probability 3.0"):
            _run(server, study1_table.frame.head(2), study1, tmp_path / "c.jsonl")


def test_a_server_without_a_chat_template_is_refused_before_any_row(tmp_path, study1, study1_table):
    with FakeOpenAIServer(chat_template=None) as server:
        with pytest.raises(ServerError, match="cannot render its chat template.*default chat template is no longer allowed"):
            _run(server, study1_table.frame, study1, tmp_path / "c.jsonl")
        assert server.completion_requests == 0


def test_reply_prefix_is_appended_once(tmp_path, study2, study2_table):
    think = "<think>\n\n</think>\n\n"
    assert reply_prefix_rest("...<｜Assistant｜>", think) == think
    assert reply_prefix_rest("...<｜Assistant｜><think>\n", think) == "\n</think>\n\n"  # a template that already opens the block
    model = ModelSpec(name="fake-model", hf_id="fake-model", reply_prefix="[[think]][[end]]\n")
    row = study2_table.frame.iloc[0].to_dict()
    messages = scoring_messages(study2.probability_questions[0], study2, row, {}, model)
    with FakeOpenAIServer() as server:
        async def go():
            async with httpx.AsyncClient(timeout=10) as http:
                return await question_ids(LLMClient(http, [server.url], 4, FAST), model, messages, {"a": ["It was bad"]})
        q = asyncio.run(go())
        assert "".join(server._pieces[t] for t in q.context).endswith("[[assistant]]\n[[think]][[end]]\n")


@pytest.mark.parametrize("method", ["first-token", "seed-literal"])
def test_first_token_methods_refuse_study2(method, study2):
    with pytest.raises(ConfigError, match=f"--scoring {method} cannot score study 2|seed-literal reproduces the seed's Study 1"):
        check_scoring_method(study2, method)
    assert main(["run", "--scoring", method, "--output", "/nonexistent-never-written"]) == 2


def test_seed_literal_sends_the_seeds_own_requests(tmp_path, study1, study1_table):
    with FakeOpenAIServer() as server:
        outcome = _run(server, study1_table.frame.head(1), study1, tmp_path / "c.jsonl", method="seed-literal")
        bodies = [body for path, body in server.scoring_requests if path == "/v1/completions"]
    row = study1_table.frame.iloc[0].to_dict()
    assert (outcome.frame.status == "ok").all() and len(bodies) == 5
    state2 = next(b for b in bodies if "exactly 2 of the 3" in b["prompt"])
    assert state2 == {"model": "fake-model", "prompt": seed_literal_prompt("state", {**row, "state": 2})[0], "max_tokens": 1,
                      "temperature": 1.0, "logprobs": 15}
    assert state2["prompt"].endswith("(e.g., 0%, 10%, 20%, etc.).\n\nAnswer with just the percentage:")
    # the fake's top-k has no '0%'..'100%' key: every bin gets -10, i.e. 1/11, as the seed computes it
    assert outcome.frame.state2_prob_70.iloc[0] == pytest.approx(1 / 11)
    assert outcome.frame.state2_mean.iloc[0] == pytest.approx(50.0)


def _independent_distribution(spec, question, row: dict, extra: dict) -> tuple[dict[str, float], float]:
    """(label -> probability, option mass) of one question instance, recomputed from the FAKE server's own definition
    of its template, tokenizer and log-probabilities (:func:`fake_chat_template`, :func:`fake_tokens`,
    :func:`fake_logprob`), without the scoring code or token ids: an option's log-probability is the sum over the
    tokens of context + option that start at or after the end of the context text, each scored after the text before
    it (BOS not included, as the FAKE server scores it); a label's adds up its forms' probabilities."""
    import math

    from tests.fakes.fake_openai_server import BOS, fake_logprob, fake_tokens

    assert FAKE.reply_prefix == ""  # the context is the FAKE template's text up to the reply, nothing after it
    context = fake_chat_template(scoring_messages(question, spec, row, extra, FAKE))
    assert context.startswith(BOS) and context.endswith("\n")  # no option can merge with the context's last token
    scores = {}
    for label, forms in question.options.items():
        per_form = []
        for form in forms:
            text = context + form
            tokens = fake_tokens(text)
            starts = [sum(len(t) for t in tokens[:i]) for i in range(len(tokens))]
            option = [i for i in range(len(tokens)) if starts[i] >= len(context)]
            assert "".join(tokens[i] for i in option) == form
            per_form.append(sum(fake_logprob(text[len(BOS):starts[i]], tokens[i]) for i in option))
        scores[label] = math.log(sum(math.exp(s) for s in per_form))
    mass = sum(math.exp(s) for s in scores.values())
    return {label: math.exp(score) / mass for label, score in scores.items()}, mass


def test_study2_distribution_and_mass_equal_an_independent_computation(tmp_path, study2, study2_table):
    """Not a sum-to-1 check (a softmax always sums to 1): see :func:`_independent_distribution`."""
    rows = study2_table.frame.head(2)
    with FakeOpenAIServer() as server:
        outcome = _run(server, rows, study2, tmp_path / "c.jsonl")
    assert (outcome.frame.status == "ok").all()
    (question,) = study2.probability_questions
    for index, row in enumerate(rows.to_dict(orient="records")):
        probs, mass = _independent_distribution(study2, question, row, {})
        got = outcome.frame.iloc[index]
        assert got["option_mass"] == pytest.approx(mass, rel=1e-9) and 0 < mass < 1
        assert len(probs) == len(FRAMES) * len(ASSESSMENTS) == 8
        for label, p in probs.items():
            assert got[f"prob_{label}"] == pytest.approx(p, rel=1e-9)
