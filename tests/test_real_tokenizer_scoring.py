"""Experiment 2 of a DeepSeek-R1 distill on a REAL tokenizer (Qwen's BPE) behind the FAKE server.

The FAKE server renders DeepSeek-R1-Distill's chat template (its generation prompt ends
``<｜Assistant｜><think>\\n``) and tokenizes with Qwen's real byte-level BPE, where ``\\n\\n`` is
one token: re-tokenizing the prompt's text joined with the rest of the reply prefix gives ids
the model never sees (every row used to fail). Log-probabilities are still the fake's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json

import httpx
import pandas as pd
import pytest

from pipeline.cli import main
from pipeline.registry import load_registry
from schemas.settings import ModelSpec
from steps.checkpoint import Checkpoint
from steps.errors import ConfigError
from steps.llm_client import LLMClient, RetryPolicy
from steps.probabilities import run_probability_step, scoring_messages
from steps.server_prompt import question_ids
from tests.fakes.fake_openai_server import FakeOpenAIServer
from tests.fakes.real_tokenizer import GENERATION_PROMPT, QwenDistillTokenizer, deepseek_r1_distill_template

FAST = RetryPolicy(max_attempts=2, base_delay_s=0.01, max_delay_s=0.02)
SHIPPED = load_registry()["deepseek-r1-distill-llama-8b"]
# the shipped distill's registry entry (reply prefix, reasoning, no system role), served by the FAKE server under its name
R1 = SHIPPED.model_copy(update={"name": "r1-distill-qwen-fake", "served_name": "fake-model", "hf_id": "fake/r1-distill-qwen"})
NEWLINE, END_THINK, TWO_NEWLINES = 198, 151649, 271  # '\n', '</think>', '\n\n' in Qwen's BPE (DESIGN.md, round 4)


def _server(**kwargs) -> FakeOpenAIServer:
    return FakeOpenAIServer(tokenizer=QwenDistillTokenizer(), chat_template=deepseek_r1_distill_template, **kwargs)


def _score(server, frame, spec, path, model=R1):
    async def go():
        async with httpx.AsyncClient(timeout=10) as http:
            with Checkpoint(path, {"t": 1}) as checkpoint:
                return await run_probability_step(frame, spec, model, LLMClient(http, [server.url], 4, FAST), checkpoint, "run-t")
    return asyncio.run(go())


def test_the_shipped_distill_is_registered_as_the_issue_describes():
    assert SHIPPED.reasoning and SHIPPED.reasoning_parser == "deepseek_r1" and SHIPPED.reply_prefix == "<think>\n\n</think>\n\n"


def test_the_context_is_the_prompts_ids_then_the_reply_prefix_as_the_model_writes_it(study2, study2_table):
    tokenizer = QwenDistillTokenizer()
    question = study2.probability_questions[0]
    messages = scoring_messages(question, study2, study2_table.frame.iloc[0].to_dict(), {}, R1)
    prompt_ids = tokenizer.encode(deepseek_r1_distill_template(messages))
    assert prompt_ids[-3:] == [151645, 151648, NEWLINE]  # ...<｜Assistant｜><think>\n
    with _server() as server:
        async def go():
            async with httpx.AsyncClient(timeout=10) as http:
                return await question_ids(LLMClient(http, [server.url], 4, FAST), R1, messages, question.options)
        q = asyncio.run(go())
    assert q.remainder == "\n</think>\n\n"
    assert list(q.context) == prompt_ids + [NEWLINE, END_THINK, TWO_NEWLINES]  # what the model emits after the prompt
    assert q.options["was_good"] == (tuple(tokenizer.encode("It was good")),)
    assert q.options["wasnt_amazing"] == (tuple(tokenizer.encode("It wasn't amazing")),)


def test_re_tokenizing_the_joined_text_gives_ids_the_model_never_sees():
    """Why the context is built from ids: the joined text's ids do not even start with the prompt's own ids."""
    tokenizer = QwenDistillTokenizer()
    prompt = deepseek_r1_distill_template([{"role": "user", "content": "How was it?"}])
    joined = tokenizer.encode(prompt + "\n</think>\n\n")
    prompt_ids = tokenizer.encode(prompt)
    assert joined[: len(prompt_ids)] != prompt_ids
    assert joined[len(prompt_ids) - 3:] == [151645, 151648, TWO_NEWLINES, END_THINK, TWO_NEWLINES]


@pytest.mark.parametrize("number", [1, 2])
def test_both_studies_are_scored_with_exactly_one_empty_think_block(tmp_path, number, study1, study1_table, study2, study2_table):
    spec, table = {1: (study1, study1_table), 2: (study2, study2_table)}[number]
    tokenizer = QwenDistillTokenizer()
    with _server() as server:
        outcome = _score(server, table.frame, spec, tmp_path / "c.jsonl")
        scored = [ids for path, body in server.scoring_requests if path == "/v1/completions" for ids in body["prompt"]]
    frame = outcome.frame
    assert len(frame) == len(table.frame) and (frame.status == "ok").all(), frame.error.dropna().unique()[:3]
    forms = {form for q in spec.probability_questions for forms in q.options.values() for form in forms}
    assert scored and len(scored) >= len(table.frame) * sum(len(q.instances()) for q in spec.probability_questions)
    for ids in scored:
        text = tokenizer.decode(ids)
        assert text.count("<think>") == 1 and text.count("</think>") == 1, text[-80:]
        assert ids.count(151648) == 1 and ids.count(END_THINK) == 1
        head, _, answer = text.partition(GENERATION_PROMPT)
        assert answer.startswith("\n</think>\n\n") and answer.removeprefix("\n</think>\n\n") in forms  # an empty block, then the option
        assert ids[ids.index(151648):ids.index(END_THINK) + 2] == [151648, NEWLINE, NEWLINE, END_THINK, TWO_NEWLINES]


def test_an_option_that_merges_with_the_reply_prefix_stops_the_step_before_any_row(tmp_path, study2, study2_table):
    """A reply prefix ending in a space: Qwen's BPE joins it with the option's first word (' It'), on every row alike."""
    merging = R1.model_copy(update={"reply_prefix": "<think>\n\n</think>\n\nAnswer: "})
    with _server() as server:
        with pytest.raises(ConfigError) as caught:
            _score(server, study2_table.frame, study2, tmp_path / "c.jsonl", model=merging)
        assert server.completion_requests == 0
    message = str(caught.value)
    assert "cannot score 'r1-distill-qwen-fake' on study 2" in message and "boundary merge" in message
    assert "'It was terrible'" in message and "Stopped before any row was scored" in message
    assert caught.value.exit_code == 2


def test_options_that_are_not_prefix_free_stop_the_step_before_any_row(tmp_path, study2, study2_table):
    question = study2.probability_questions[0]
    options = {**question.options, "was_good_very": ("It was good very",)}
    spec = dataclasses.replace(study2, probability_questions=(dataclasses.replace(question, options=options),))
    with _server() as server:
        with pytest.raises(ConfigError, match=r"option 'was_good' \(form 1\) begin the ids of option 'was_good_very'"):
            _score(server, study2_table.frame.head(2), spec, tmp_path / "c.jsonl")


def test_a_registry_reasoning_model_through_the_cli(tmp_path):
    """`grace-pipeline run --registry` with a distill on the REAL tokenizer: traces split, every row of both studies scored."""
    registry = tmp_path / "models.yaml"
    registry.write_text("models:\n  - name: r1-distill-qwen-fake\n    hf_id: fake-model\n    reasoning: true\n"
                        "    reasoning_parser: deepseek_r1\n    system_role: false\n"
                        "    reply_prefix: \"<think>\\n\\n</think>\\n\\n\"\n", encoding="utf-8")
    with _server(reasoning="prompt-opened") as server:
        code = main(["run", "--registry", str(registry), "--models", "r1-distill-qwen-fake", "--endpoint",
                     f"r1-distill-qwen-fake={server.url}", "--stages", "query,probabilities", "--output", str(tmp_path / "out")])
    assert code == 0
    (run_dir,) = (tmp_path / "out").iterdir()
    for number, rows in ((1, 6), (2, 8)):
        raw = pd.read_parquet(run_dir / "exp1" / f"r1-distill-qwen-fake_study{number}_raw_responses.parquet")
        assert len(raw) == rows and (raw.status == "ok").all() and (raw.trace_split == "think-tags").all()
        assert not raw.model_response.str.contains("think").any() and raw.reasoning_trace.str.startswith("Let me think").all()
        probabilities = pd.read_parquet(run_dir / "exp2" / f"r1-distill-qwen-fake_study{number}_probabilities.parquet")
        assert len(probabilities) == rows and (probabilities.status == "ok").all()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["models"]["r1-distill-qwen-fake"]["reasoning_parser"] == "deepseek_r1"
    # an endpoint of the researcher's: the pipeline splits at </think> unless the server sends the trace apart (trace_split says)
    assert manifest["invocations"][-1]["servers"]["r1-distill-qwen-fake"]["reasoning_split"].startswith("client:")


def test_a_model_spec_with_a_parser_must_be_a_reasoning_model():
    with pytest.raises(ValueError, match="reasoning_parser 'deepseek_r1' is set but reasoning is false"):
        ModelSpec(name="x", hf_id="x", reasoning_parser="deepseek_r1")
