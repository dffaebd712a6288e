"""Prompt rendering: chat messages, <br> handling, system role folding, hashes."""

from __future__ import annotations

from steps.prompts import html_breaks_to_newlines, messages_hash, render_messages


def test_br_becomes_line_break():
    assert html_breaks_to_newlines("One.<br>Two. <BR/> Three.<br />") == "One.\nTwo.\nThree."


def test_study1_prompt_has_row_text_and_no_markup(study1, study1_table):
    row = study1_table.frame.iloc[0].to_dict()
    messages = render_messages(study1.query_prompt, study1, row)
    assert [m["role"] for m in messages] == ["system", "user"]
    user = messages[1]["content"]
    assert "<br>" not in user
    assert "A teacher has just finished grading 3 exams.\nExams in this class" in user
    for column in ("priorQ", "speach", "speachQ", "knowledgeQ"):
        assert row[column] in user
    assert "{" not in user  # every placeholder was filled


def test_study2_prompt_lists_the_eight_utterances(study2, study2_table):
    row = study2_table.frame.iloc[5].to_dict()  # its Utterance (a materials column) is "It was okay"
    user = render_messages(study2.query_prompt, study2, row)[-1]["content"]
    for frame in ("It was", "It wasn't"):
        for word in ("terrible", "bad", "good", "amazing"):
            assert f"{frame} {word}" in user
    # the materials' utterance is not leaked into the prompt
    assert row["Goal"] in user and row["State"] in user and row["Utterance"] not in user


def test_system_text_is_folded_for_models_without_system_role(study1, study1_table):
    row = study1_table.frame.iloc[0].to_dict()
    with_role = render_messages(study1.query_prompt, study1, row, system_role=True)
    folded = render_messages(study1.query_prompt, study1, row, system_role=False)
    assert [m["role"] for m in folded] == ["user"]
    assert folded[0]["content"] == with_role[0]["content"] + "\n\n" + with_role[1]["content"]


def test_hashes_are_stable_and_sensitive(study1, study1_table):
    rows = study1_table.frame.to_dict(orient="records")
    a = messages_hash(render_messages(study1.query_prompt, study1, rows[0]))
    assert a == messages_hash(render_messages(study1.query_prompt, study1, rows[0]))
    assert a != messages_hash(render_messages(study1.query_prompt, study1, rows[1]))
    assert len(study1.query_prompt.hash) == 16
