"""The deterministic parser on tricky, real-looking answers."""

from __future__ import annotations

import pytest

from steps.parse_answers import parse_study1, parse_study2

FORMATTED = "Initial Answer: 2\nProbabilities: 0: 10%, 1: 20%, 2: 30%, 3: 40%\nKnowledge: no"


@pytest.mark.parametrize("text,values,notes", [
    pytest.param(FORMATTED, {"Prior_A": 2, "probability_0": 10, "probability_1": 20, "probability_2": 30, "probability_3": 40,
                             "Knowledge_A": "no"}, {}, id="as-requested"),
    pytest.param("**Initial Answer:** three\n\n**Probabilities:** 0: 0%, 1: 5%, 2: 15%, 3: 80%\n\n**Knowledge:** Yes.",
                 {"Prior_A": 3, "probability_3": 80, "Knowledge_A": "yes"}, {}, id="markdown-and-words"),
    pytest.param("Initial Answer: 3\nProbabilities:\n- 0: 5%\n- 1: 5%\n- 2: 30%\n- 3: 50%\nKnowledge: yes", {"probability_3": 50},
                 {"probabilities": "bets sum to 90, not 100 (kept as given)"}, id="multi-line-not-100"),
    pytest.param("I'd bet $10 on 0 exams, $10 on 1, $30 on 2 and $50 on 3.\nKnowledge: no",
                 {"probability_0": 10, "probability_2": 30, "Knowledge_A": "no"}, {}, id="dollar-bets"),
    pytest.param("Initial Answer: 2\nProbabilities: 0: 33.3%, 1: 33.3%, 2: 33.4%, 3: 0%", {"probability_0": 33, "probability_2": 33},
                 {"probability_0": "33.3 rounded to 33"}, id="decimals"),
])
def test_study1_parses(text, values, notes):
    parsed = parse_study1(text)
    for key, value in values.items():
        assert parsed.values[key] == value
    for key, note in notes.items():
        assert parsed.notes[key] == note


@pytest.mark.parametrize("text,absent", [
    pytest.param("I don't know how many there are, the speaker knows a small number.", ["Knowledge_A", "Prior_A"],
                 id="no-inside-know-all-inside-small"),
    pytest.param("Initial Answer: 2 or 3, hard to say", ["Prior_A"], id="hedge"),
    pytest.param("Initial Answer: 2\nInitial Answer: 3", ["Prior_A"], id="two-answers"),
    pytest.param("I'm sorry, I can't help with that.", ["Prior_A", "Knowledge_A", "probability_0"], id="refusal"),
    pytest.param("Knowledge: yes\nKnowledge: no", ["Knowledge_A"], id="contradicting-knowledge"),
    pytest.param("Probabilities: 0: 10%, 1: 90%", ["probability_0"], id="incomplete-bets"),
])
def test_study1_does_not_claim_what_is_unclear(text, absent):
    parsed = parse_study1(text)
    for key in absent:
        assert key not in parsed.values


def test_study1_hints():
    assert parse_study1("no").hints == {"Knowledge_A": "no"}
    assert parse_study1("2").hints["Prior_A"] == 2


@pytest.mark.parametrize("text,frame,assessment", [
    pytest.param("It wasn't terrible.", "wasn't", "terrible", id="plain"),
    pytest.param('"It wasn\u2019t terrible."', "wasn't", "terrible", id="quoted-curly"),
    pytest.param("It was not bad", "wasn't", "bad", id="was-not-is-wasnt"),
    pytest.param("**It was amazing!**", "was", "amazing", id="markdown"),
    pytest.param("Bob would say: It was good. He wanted to be kind.", "was", "good", id="chatty"),
    pytest.param("Answer: it WAS GOOD", "was", "good", id="case"),
])
def test_study2_parses(text, frame, assessment):
    parsed = parse_study2(text)
    assert (parsed.values["Was_Wasnt"], parsed.values["Assessment"]) == (frame, assessment)
    assert parsed.values["response_cleaned"] == f"It {frame} {assessment}"


@pytest.mark.parametrize("text", [
    pytest.param("It was terrible / It was bad / It was good / It was amazing", id="option-list-echoed"),
    pytest.param("It was okay", id="outside-the-eight"),
    pytest.param("Honestly, I'd rather not say.", id="refusal"),
])
def test_study2_leaves_unclear_answers_to_the_llm_tier(text):
    assert parse_study2(text).values == {}


def test_reasoning_trace_is_not_parsed_as_the_answer():
    parsed = parse_study2("<think>Maybe It was terrible? No, be kind.</think>It was good.")
    assert parsed.values["Assessment"] == "good"
    assert parse_study1("<think>Initial Answer: 3</think>\nInitial Answer: 1").values["Prior_A"] == 1


def test_hedge_is_noted():
    assert parse_study1("Initial Answer: 2 or 3").notes["Prior_A"] == "hedged answer '2 or 3'"


def test_study2_hints():
    assert parse_study2("The poem was not good at all").hints == {"Assessment": "good", "Was_Wasnt": "wasn't"}
