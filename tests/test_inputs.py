"""Input validation: every kind of bad file is rejected with file, row, line and column."""

from __future__ import annotations

import pytest

from pipeline.config import example_study_path
from steps.errors import InputValidationError
from steps.inputs import load_study_table
from tests.conftest import read_rows, write_rows


def _mutated(tmp_path, number, mutate, name="study.csv"):
    header, rows = read_rows(example_study_path(number))
    header, rows = mutate(list(header), [list(r) for r in rows])
    return write_rows(tmp_path / name, header, rows)


def _set(column, row, value):
    def mutate(header, rows):
        rows[row][header.index(column)] = value
        return header, rows
    return mutate


def _rename(old, new):
    def mutate(header, rows):
        header[header.index(old)] = new
        return header, rows
    return mutate


def _drop(column):
    def mutate(header, rows):
        i = header.index(column)
        return header[:i] + header[i + 1:], [r[:i] + r[i + 1:] for r in rows]
    return mutate


def _duplicate_row(row):
    def mutate(header, rows):
        return header, rows + [rows[row]]
    return mutate


BAD_INPUTS = [
    pytest.param(1, _rename("speach", "speech"), ["required column 'speach' is missing", "found 'speech'"], id="renamed-speach"),
    pytest.param(1, _drop("knowledgeQ"), ["required column 'knowledgeQ' is missing"], id="missing-column"),
    pytest.param(1, _set("access", 2, "4"), ["row 3 (line 4), column 'access'", "less than or equal to 3", "'4'"],
                 id="access-out-of-range"),
    pytest.param(1, _set("access", 0, "two"), ["row 1 (line 2), column 'access'", "valid integer", "'two'"], id="access-not-integer"),
    pytest.param(1, _set("observe", 0, "3"), ["row 1 (line 2)", "observe (3) cannot exceed access (2)"], id="observe-exceeds-access"),
    pytest.param(1, _set("observe", 1, "-1"), ["row 2 (line 3), column 'observe'", "greater than or equal to 0"], id="observe-negative"),
    pytest.param(1, _set("participant_id", 4, "P7"), ["row 5 (line 6), column 'participant_id'", "'P7'"], id="participant-not-integer"),
    pytest.param(1, _set("speachQ", 3, "   "), ["row 4 (line 5), column 'speachQ': is empty"], id="empty-text"),
    pytest.param(1, _duplicate_row(2), ["row 7 (line 8): exact duplicate of row 3 (line 4)"], id="duplicate-row"),
    pytest.param(2, _set("State", 0, "5 hearts"), ["row 1 (line 2), column 'State'", "out of range"], id="state-out-of-range"),
    pytest.param(2, _set("State", 1, "very good"), ["row 2 (line 3), column 'State'", "'N hearts'"], id="state-not-hearts"),
    pytest.param(2, _set("Goal", 2, "Frank wanted to go home."), ["row 3 (line 4), column 'Goal'", "unknown Goal template"],
                 id="unknown-goal"),
    pytest.param(2, _set("SP_Name", 3, ""), ["row 4 (line 5), column 'SP_Name': is empty"], id="empty-name"),
    pytest.param(2, _drop("State"), ["required column 'State' is missing"], id="missing-state"),
]


@pytest.mark.parametrize("number,mutate,expected", BAD_INPUTS)
def test_bad_input_is_rejected_with_location(tmp_path, number, mutate, expected, study1, study2):
    path = _mutated(tmp_path, number, mutate)
    with pytest.raises(InputValidationError) as info:
        load_study_table(path, study1 if number == 1 else study2)
    message = str(info.value)
    assert str(path) in message
    for fragment in expected:
        assert fragment in message


def test_all_problems_are_reported_at_once(tmp_path, study1):
    def mutate(header, rows):
        rows[0][header.index("access")] = "9"
        rows[1][header.index("priorQ")] = ""
        return header, rows
    with pytest.raises(InputValidationError) as info:
        load_study_table(_mutated(tmp_path, 1, mutate), study1)
    assert len(info.value.problems) == 2


@pytest.mark.parametrize("content,expected", [
    pytest.param(b"PK\x03\x04rest-of-zip", "Excel workbook", id="xlsx"),
    pytest.param(b"PAR1\x00\x00", "Parquet", id="parquet"),
    pytest.param(b"abc\x00def\n", "binary", id="binary"),
    pytest.param(b"", "empty", id="empty"),
    pytest.param(b"participant_id,story_shortname\n", "missing", id="header-only-wrong"),
])
def test_not_a_csv(tmp_path, study1, content, expected):
    path = tmp_path / "weird.csv"
    path.write_bytes(content)
    with pytest.raises(InputValidationError, match=expected):
        load_study_table(path, study1)


def test_wrong_encoding_names_line_and_suggests_fix(tmp_path, study2):
    header, rows = read_rows(example_study_path(2))
    rows[3][header.index("SP_Name")] = "Zoë"
    path = write_rows(tmp_path / "latin.csv", header, rows, encoding="cp1252")
    with pytest.raises(InputValidationError) as info:
        load_study_table(path, study2)
    assert "line 5" in str(info.value) and "--encoding cp1252" in str(info.value)
    table = load_study_table(path, study2, encoding="cp1252")  # the suggested fix works
    assert table.frame.loc[3, "SP_Name"] == "Zoë"


def test_missing_file(tmp_path, study1):
    with pytest.raises(InputValidationError, match="file not found"):
        load_study_table(tmp_path / "nope.csv", study1)


def test_header_only(tmp_path, study1):
    header, _ = read_rows(example_study_path(1))
    with pytest.raises(InputValidationError, match="no data rows"):
        load_study_table(write_rows(tmp_path / "h.csv", header, []), study1)


def test_ragged_row(tmp_path, study1):
    path = tmp_path / "ragged.csv"
    original = open(example_study_path(1), encoding="utf-8").read().splitlines()
    path.write_text("\n".join(original[:3] + ["1,exams,too,few"] + original[3:]) + "\n", encoding="utf-8")
    with pytest.raises(InputValidationError, match=r"row 3 \(line 4\): has 4 fields, expected 9"):
        load_study_table(path, study1)


def test_quirks_of_the_real_files_are_accepted(tmp_path, study1, study2):
    """BOM, semicolons, an R row-name column, CRLF line ends and column order do not matter."""
    header, rows = read_rows(example_study_path(1))
    order = list(reversed(range(len(header))))
    text = ";".join(['""'] + [header[i] for i in order]) + "\r\n"
    for n, row in enumerate(rows, 1):
        text += ";".join([f'"{n}"'] + [f'"{row[i]}"' for i in order]) + "\r\n"
    path = tmp_path / "r-export.csv"
    path.write_bytes("\ufeff".encode() + text.encode("utf-8"))
    table = load_study_table(path, study1)
    assert list(table.frame.columns) == list(study1.input_model.model_fields)
    assert len(table.frame) == len(rows)
    assert table.warnings == ["column '' is not used by study 1 and is ignored"]


def test_examples_are_valid_and_typed(study1_table, study2_table):
    assert len(study1_table.frame) == 6
    assert set(study1_table.frame.story_shortname) == {"exams", "letters", "tickets", "fruits", "phones", "seeds"}
    assert study1_table.frame["access"].dtype.kind == "i"
    assert "<br>" in study1_table.frame.loc[0, "story_setup"]
    assert set(study2_table.frame.Goal_simplified) == {"social", "informational", "both"}
    assert "It was okay" in set(study2_table.frame.Utterance)
    assert sorted(set(study2_table.frame.State_number)) == [0, 1, 2, 3]
