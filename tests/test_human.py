"""Human data files (--human1, --human2): validation with file/row/column before any model call, and the run options."""

from __future__ import annotations

import pytest

from pipeline.cli import main
from steps.errors import InputValidationError
from steps.human import load_human_table
from tests.fakes.fake_openai_server import FakeOpenAIServer
from tests.human_data import write_human1, write_human2

HEADER2 = '"subid","trial","item","goal","true_state","positivity","utterance"\n'


def test_yoon_format_is_read_and_mapped(tmp_path):
    table = load_human_table(2, write_human2(tmp_path / "speaker_production.csv"))
    assert len(table.frame) == 600 and table.participants == 50 and len(table.sha256) == 64
    frame = table.frame
    assert set(frame.Goal_simplified) == {"informational", "social", "both"}  # 'informative' as published
    assert set(frame.State_number) == {0, 1, 2, 3}
    cell = frame[(frame.Goal_simplified == "informational") & (frame.State_number == 0)]
    assert (cell.utterance == "It was terrible").sum() == 29 and (cell.utterance == "It wasn't good").sum() == 11


def test_published_quirks_are_accepted(tmp_path):
    """R's row-number column (empty header) is ignored with a warning; values in any case, blanks around them."""
    path = tmp_path / "h.csv"
    path.write_text('"","subid","trial","item","goal","true_state","positivity","utterance"\n'
                    '"1","a.json",1,"song"," Informative ","HEART3","no_neg","Amazing"\n')
    table = load_human_table(2, path)
    assert table.frame.iloc[0].to_dict() == {"subid": "a.json", "trial": 1, "item": "song", "Goal_simplified": "informational",
                                             "State_number": 3, "utterance": "It was amazing"}
    assert any("''" in w and "ignored" in w for w in table.warnings)


@pytest.mark.parametrize("row, column, words", [
    pytest.param('"a",1,"song","polite","heart1","no_neg","good"', "goal", "informative", id="unknown-goal"),
    pytest.param('"a",1,"song","social","3 hearts","no_neg","good"', "true_state", "heart0", id="state-as-text"),
    pytest.param('"a",1,"song","social","heart1","maybe","good"', "positivity", "neg", id="bad-positivity"),
    pytest.param('"a",1,"song","social","heart1","neg","okay"', "utterance", "terrible", id="utterance-outside-the-4"),
    pytest.param('"a",1,"song","social","heart1","neg",NA', "utterance", "empty", id="NA-answer"),
    pytest.param('"a",x,"song","social","heart1","neg","good"', "trial", "integer", id="trial-not-a-number"),
])
def test_a_bad_cell_is_named_by_file_row_and_column(tmp_path, row, column, words):
    path = tmp_path / "human2.csv"
    path.write_text(HEADER2 + '"a",1,"song","social","heart1","neg","good"\n' + row + "\n")
    with pytest.raises(InputValidationError) as info:
        load_human_table(2, path)
    message = str(info.value)
    assert str(path) in message and f"row 2 (line 3), column '{column}'" in message and words in message
    assert "no model was called" in message


def test_missing_columns_and_empty_files(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text('"subid","trial","item","goal","state","positivity","utterance"\n"a",1,"x","social","heart1","neg","good"\n')
    with pytest.raises(InputValidationError, match="required column 'true_state' is missing"):
        load_human_table(2, path)
    path.write_text(HEADER2)
    with pytest.raises(InputValidationError, match="no data rows"):
        load_human_table(2, path)
    with pytest.raises(InputValidationError, match="file not found"):
        load_human_table(2, tmp_path / "absent.csv")


def test_study1_long_format(tmp_path):
    table = load_human_table(1, write_human1(tmp_path / "h1.csv"))
    frame = table.frame
    assert len(frame) == 180 and table.participants == 20
    bets = frame[["bet_0", "bet_1", "bet_2", "bet_3"]].sum(axis=1)
    assert bets.round(12).eq(1.0).all()  # normalised per trial
    first = frame[(frame.subid == "s0") & (frame.access == 3) & (frame.observe == 2)].iloc[0]
    assert first.bet_2 == pytest.approx(0.8) and first.bet_3 == pytest.approx(0.2)


@pytest.mark.parametrize("header, row, problem", [
    pytest.param("subid,story,access,observe,bet_0,bet_1,bet_2,bet_3", "a,exams,2,3,1,1,1,1", "observe (3) cannot exceed access (2)",
                 id="observe-above-access"),
    pytest.param("subid,story,access,observe,bet_0,bet_1,bet_2,bet_3", "a,exams,2,1,10,,30,60", "must all be given",
                 id="partial-bets"),
    pytest.param("subid,story,access,observe,bet_0,bet_1,bet_2,bet_3", "a,exams,2,1,0,0,0,0", "sum to 0", id="zero-bets"),
    pytest.param("subid,story,access,observe,prior,knowledge", "a,exams,2,1,,", "no response", id="no-response"),
    pytest.param("subid,story,access,observe,bet_0,bet_1,bet_2,bet_3", "a,exams,2,1,-5,30,30,45", "greater than or equal to 0",
                 id="negative-bet"),
    pytest.param("subid,story,access,observe,prior", "a,exams,4,1,2", "less than or equal to 3", id="access-4"),
    pytest.param("subid,trial,story,access,observe,prior", "a,first,exams,3,1,2", "column 'trial'", id="trial-not-a-number"),
    pytest.param("subid,trial,story,access,observe,prior", "a,1.5,exams,3,1,2", "column 'trial'", id="trial-not-whole"),
])
def test_study1_problems_are_named(tmp_path, header, row, problem):
    path = tmp_path / "h1.csv"
    path.write_text(f"{header}\n{row}\n")
    with pytest.raises(InputValidationError) as info:
        load_human_table(1, path)
    assert "row 1 (line 2)" in str(info.value) and problem in str(info.value)


def test_study1_file_without_any_response_column(tmp_path):
    path = tmp_path / "h1.csv"
    path.write_text("subid,story,access,observe\na,exams,3,2\n")
    with pytest.raises(InputValidationError, match="no response column"):
        load_human_table(1, path)


def test_a_bad_human_file_stops_the_run_before_any_model_call(tmp_path, capsys):
    human = tmp_path / "human2.csv"
    human.write_text(HEADER2 + '"a",1,"song","social","heart9","neg","good"\n')
    with FakeOpenAIServer() as server:
        code = main(["run", "--endpoint", f"fake-model={server.url}", "--human2", str(human), "--store", str(tmp_path / "out")])
        assert server.chat_requests == 0 and server.completion_requests == 0
    err = capsys.readouterr().err
    assert code == 2 and str(human) in err and "row 1 (line 2), column 'true_state'" in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.parquet"))


def test_human_file_for_a_study_not_run_is_refused(tmp_path, capsys):
    code = main(["validate", "--studies", "1", "--human2", str(write_human2(tmp_path / "h.csv"))])
    assert code == 2 and "study 2 is not run" in capsys.readouterr().err


def test_validate_command_checks_human_files(tmp_path, capsys):
    code = main(["validate", "--human2", str(write_human2(tmp_path / "h.csv")), "--human1", str(write_human1(tmp_path / "h1.csv"))])
    out = capsys.readouterr().out
    assert code == 0 and "600 trials from 50 participants OK" in out and "180 trials from 20 participants OK" in out
