"""Structured extraction: the LLM tier over respx, the combination and its confidence levels."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import respx

from pipeline.cli import main
from schemas.structured import Study2Fields
from steps.checkpoint import Checkpoint
from steps.extract import Extractor, combine, llm_extract, parse_extractor_reply, response_format, run_extract_step
from steps.llm_client import LLMClient, RetryPolicy
from steps.parse_answers import parse_study1, parse_study2

URL = "http://extractor.test"


def _reply(content: str, status: int = 200) -> httpx.Response:
    if status != 200:
        return httpx.Response(status, json={"error": {"message": "overloaded"}})
    return httpx.Response(200, json={"choices": [{"message": {"role": "assistant", "content": content}}]})


def _extract(spec, replies, response="The answer is unclear."):
    async def go():
        with respx.mock:
            route = respx.post(f"{URL}/v1/chat/completions").mock(side_effect=replies)
            async with httpx.AsyncClient() as http:
                client = LLMClient(http, [URL], 2, RetryPolicy(max_attempts=2, base_delay_s=0.0, max_delay_s=0.0))
                result = await llm_extract(Extractor(client, "deepseek-chat", "json_object"), spec, response)
            return result, route
    return asyncio.run(go())


def test_code_fenced_json_is_accepted(study2):
    fenced = 'Sure!\n```json\n{"Was_Wasnt": "wasn\'t", "Assessment": "bad", "response_cleaned": "It wasn\'t bad"}\n```'
    (fields, error), route = _extract(study2, [_reply(fenced)])
    assert error is None and fields["Was_Wasnt"] == "wasn't" and route.call_count == 1
    sent = json.loads(route.calls[0].request.content)
    assert sent["response_format"] == {"type": "json_object"} and sent["temperature"] == 0.0
    assert "The answer is unclear." in sent["messages"][1]["content"]


def test_schema_violation_is_retried_once_with_the_error(study2):
    (fields, error), route = _extract(study2, [_reply('{"Was_Wasnt": "is", "Assessment": "okay"}'),
                                               _reply('{"Was_Wasnt": "was", "Assessment": "good"}')])
    assert error is None and fields["Assessment"] == "good"
    retry_messages = json.loads(route.calls[1].request.content)["messages"]
    assert "does not match the schema" in retry_messages[-1]["content"] and "Was_Wasnt" in retry_messages[-1]["content"]


@pytest.mark.parametrize("replies,expected", [
    pytest.param([_reply("not json at all"), _reply("{broken}")], "reply invalid twice: the reply is not valid JSON", id="invalid-json"),
    pytest.param([_reply("[1, 2]"), _reply("[1, 2]")], "invalid twice", id="not-an-object"),
    pytest.param([_reply("", 503), _reply("", 503)], "request failed: HTTP 503", id="http-error"),
])
def test_llm_tier_failures_are_reported(study1, replies, expected):
    (fields, error), _ = _extract(study1, replies)
    assert fields is None and expected in error


def test_parse_reply_with_missing_fields_gives_nulls():
    assert parse_extractor_reply('{"Was_Wasnt": "was"}', Study2Fields) == {"Was_Wasnt": "was", "Assessment": None, "response_cleaned": None}


def test_response_formats():
    assert response_format(Study2Fields, "llama_schema")["schema"]["properties"]["Assessment"]
    assert response_format(Study2Fields, "json_schema")["json_schema"]["name"] == "Study2Fields"
    assert response_format(Study2Fields, "none") is None


@pytest.mark.parametrize("text,llm,confidence,method,status", [
    pytest.param("It wasn't terrible.", None, 1.0, "parser", "ok", id="parser"),
    pytest.param("Hmm, maybe okay-ish", {"Was_Wasnt": "was", "Assessment": "good"}, 0.6, "llm", "ok", id="llm-only"),
    pytest.param("The poem was not good at all", {"Was_Wasnt": "wasn't", "Assessment": "good"}, 0.9, "llm", "ok",
                 id="llm-agrees-with-hints"),
    pytest.param("The poem was not good at all", {"Was_Wasnt": "was", "Assessment": "good"}, 0.3, "llm", "ok", id="llm-contradicts"),
    pytest.param("It was okay", {"Was_Wasnt": "was", "Assessment": None}, 0.0, "llm", "partial", id="outside-the-eight"),
    pytest.param("No idea.", None, 0.0, "none", "not_found", id="nothing"),
])
def test_combine_study2(text, llm, confidence, method, status):
    out = combine(2, parse_study2(text), llm, None if llm else "no LLM extractor configured")
    assert (out["extraction_confidence"], out["extraction_method"], out["extraction_status"]) == (confidence, method, status)
    if status == "ok":
        assert out["response_cleaned"] == f"It {out['Was_Wasnt']} {out['Assessment']}"


def test_a_failed_llm_tier_marks_the_row_failed():
    out = combine(2, parse_study2("hmm"), None, "LLM extractor request failed: HTTP 503", llm_failed=True)
    assert out["extraction_status"] == "failed" and "HTTP 503" in out["extraction_errors"]


def test_combine_study1_mixes_tiers_and_keeps_bets_as_given():
    parsed = parse_study1("Initial Answer: 2\nKnowledge: yes\nI'd split it 10/20/30/30.")
    llm = {"Prior_A": 1, "probability_0": 10, "probability_1": 20, "probability_2": 30, "probability_3": 30, "Knowledge_A": "yes"}
    out = combine(1, parsed, llm, None)
    assert out["Prior_A"] == 2  # the parser's labelled answer wins over the LLM's
    assert out["probability_3"] == 30 and out["extraction_method"] == "llm+parser"
    assert out["extraction_confidence"] == 0.6
    assert "bets sum to 90, not 100 (kept as given)" in out["extraction_errors"]


def test_step_skips_failed_queries_and_resumes(tmp_path, study2, study2_table):
    raw = study2_table.frame.copy()
    raw["model_response"] = ["It was good."] * 7 + [None]
    raw["status"] = ["ok"] * 7 + ["failed"]
    raw["row_index"], raw["replication"] = range(8), 0
    with Checkpoint(tmp_path / "c.jsonl", {"t": 1}) as checkpoint:
        outcome = asyncio.run(run_extract_step(raw, study2, None, checkpoint))
    frame = outcome.frame
    assert list(frame.extraction_status) == ["ok"] * 7 + ["skipped"] and outcome.failed == 0
    with Checkpoint(tmp_path / "c.jsonl", {"t": 1}) as checkpoint:
        again = asyncio.run(run_extract_step(raw, study2, None, checkpoint))
    assert again.resumed == 7


def test_a_checkpointed_code_of_another_answer_is_never_reused(tmp_path, study2, study2_table):
    """Two runs on one store once paired "It was terrible" with the code `wasn't` of another answer."""
    raw = study2_table.frame.copy()
    raw["model_response"] = ["It wasn't bad."] * 8
    raw["status"], raw["row_index"], raw["replication"] = "ok", range(8), 0
    with Checkpoint(tmp_path / "c.jsonl", {"t": 1}) as checkpoint:
        asyncio.run(run_extract_step(raw, study2, None, checkpoint))
    raw.loc[3, "model_response"] = "It was terrible."  # the raw table now holds another answer for row 3
    with Checkpoint(tmp_path / "c.jsonl", {"t": 1}) as checkpoint:
        again = asyncio.run(run_extract_step(raw, study2, None, checkpoint))
    assert again.resumed == 7  # row 3 was coded anew
    row = again.frame.set_index("row_index").loc[3]
    assert (row.model_response, row.Was_Wasnt, row.Assessment) == ("It was terrible.", "was", "terrible")


def test_missing_api_key_is_an_error_before_any_call(tmp_path, fake_server, capsys, monkeypatch):
    monkeypatch.delenv("DEEPSEEK_API_KEY", raising=False)
    code = main(["run", "--endpoint", f"fake-model={fake_server.url}", "--extractor-url", "https://api.deepseek.com",
                 "--output", str(tmp_path)])
    assert code == 2
    assert "needs an API key: set $DEEPSEEK_API_KEY" in capsys.readouterr().err
    assert fake_server.chat_requests == 0


def test_api_key_never_reaches_outputs(tmp_path, fake_server, monkeypatch):
    secret = "sk-extractor-secret-42"
    monkeypatch.setenv("GRACE_TEST_KEY", secret)
    assert main(["run", "--endpoint", f"fake-model={fake_server.url}", "--extractor-url", fake_server.url, "--extractor-model",
                 "fake-model", "--extractor-api-key-env", "GRACE_TEST_KEY", "--stages", "query,extract", "--output", str(tmp_path)]) == 0
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_free_text_answers_go_through_the_llm_tier_end_to_end(tmp_path):
    """The FAKE server answers in free text the parser cannot settle and codes it as an LLM extractor would:
    every row is coded by the LLM tier, with its model recorded and the values it was given."""
    import pandas as pd

    from pipeline.cli import main
    from tests.fakes.fake_openai_server import FakeOpenAIServer, fake_extraction

    with FakeOpenAIServer(free_text=True) as server:
        assert main(["run", "--endpoint", f"fake-model={server.url}", "--extractor-url", server.url, "--extractor-model", "fake-model",
                     "--limit", "3", "--stages", "query,extract", "--output", str(tmp_path)]) == 0
    for study in (1, 2):
        (path,) = tmp_path.glob(f"*/structured/fake-model_study{study}_structured.parquet")
        frame = pd.read_parquet(path)
        assert len(frame) == 3 and frame.extraction_method.str.contains("llm").all()
        assert (frame.extractor_model == "fake-model").all() and (frame.extraction_status == "ok").all()
        for _, row in frame.iterrows():
            for field, value in fake_extraction(row.model_response).items():
                assert row[field] == value, (study, field, row.model_response)
