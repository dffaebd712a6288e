"""The validate and merge nodes end to end against the FAKE server: analysis tables, codebook, exit code."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline.cli import main
from tests.fakes.fake_openai_server import FakeOpenAIServer


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    with FakeOpenAIServer(model="fake-model") as server:
        with FakeOpenAIServer(model="other-model") as other:  # each fake serves one model name
            code = main(["run", "--models", "fake-model,other-model", "--endpoint", f"fake-model={server.url}",
                         "--endpoint", f"other-model={other.url}", "--extractor-url", server.url, "--extractor-model", "fake-model",
                         "--replications", "2", "--output", str(out)])
    assert code == 0
    (run,) = out.iterdir()
    return run


def test_analysis_table_is_long_and_complete(run_dir):
    for study, rows in ((1, 6), (2, 8)):
        table = pd.read_parquet(run_dir / "analysis" / f"study{study}_analysis.parquet")
        assert len(table) == rows * 2 * 2  # rows x models x replications
        assert set(table.model_name) == {"fake-model", "other-model"}
        assert table.groupby(["row_index", "model_name"]).size().eq(2).all()
        assert table.columns[0:2].tolist() == ["run_id", "row_index"]
        assert table.query_status.eq("ok").all() and table.probability_status.eq("ok").all()
        assert table.extraction_method.eq("parser").all() and table.code_version.str.len().gt(0).all()
    s2 = pd.read_parquet(run_dir / "analysis" / "study2_analysis.parquet")
    assert {"Goal_simplified", "State_number", "Utterance", "response_cleaned", "prob_was", "entropy_joint"} <= set(s2.columns)
    schema = pq.read_schema(run_dir / "analysis" / "study2_analysis.parquet")
    assert str(schema.field("Goal_simplified").type).startswith("dictionary")  # arrives in R as a factor


def test_csv_reads_back_without_surprises(run_dir):
    text = (run_dir / "analysis" / "study1_analysis.csv").read_text(encoding="utf-8")
    header = text.splitlines()[0].split(",")
    assert header[0] == "run_id" and "Unnamed" not in text
    table = pd.read_csv(run_dir / "analysis" / "study1_analysis.csv", keep_default_na=False, na_values=["NA"])
    parquet = pd.read_parquet(run_dir / "analysis" / "study1_analysis.parquet")
    assert list(table.columns) == list(parquet.columns) and len(table) == len(parquet)
    assert table["reasoning_trace"].isna().all()  # missing values are written as NA


def test_codebook_documents_every_column(run_dir):
    for study in (1, 2):
        codebook = pd.read_csv(run_dir / "analysis" / f"study{study}_codebook.csv")
        columns = pd.read_parquet(run_dir / "analysis" / f"study{study}_analysis.parquet").columns
        assert codebook.column.tolist() == list(columns)
        assert codebook.meaning.fillna("").str.len().gt(0).all()
    codebook = pd.read_csv(run_dir / "analysis" / "study2_codebook.csv").set_index("column")
    assert codebook.loc["Assessment", "allowed_values"] == "terrible | bad | good | amazing"
    assert codebook.loc["State_number", "allowed_values"] == "0 .. 3"


def test_validation_result_and_flags(run_dir):
    result = json.loads((run_dir / "validation" / "study1_validation.json").read_text())
    assert result["passed"] and set(result["models"]) == {"fake-model", "other-model"}
    flags = pd.read_csv(run_dir / "validation" / "study1_flagged_rows.csv")
    table = pd.read_parquet(run_dir / "analysis" / "study1_analysis.parquet")
    flagged = table[table.review_flags.notna()]
    assert len(flags) and len(flagged) and set(flags.flag) >= {"low_option_mass"}


def test_broken_outputs_fail_validation_with_exit_5(tmp_path, capsys):
    with FakeOpenAIServer() as server:
        args = ["run", "--endpoint", f"fake-model={server.url}", "--extractor-url", server.url, "--extractor-model", "fake-model",
                "--studies", "2", "--output", str(tmp_path)]
        assert main(args) == 0
        (run,) = tmp_path.iterdir()
        probs_path = run / "exp2" / "fake-model_study2_probabilities.parquet"
        probs = pd.read_parquet(probs_path)
        probs.loc[1, "prob_was_good"] = 0.9
        probs.to_parquet(probs_path, index=False)
        capsys.readouterr()
        assert main(args + ["--stages", "validate,merge"]) == 5
    out = capsys.readouterr()
    assert "row 1: joint sums to" in out.out
    assert (run / "analysis" / "study2_analysis.parquet").exists()  # the data is still merged for inspection


def test_models_with_different_stages_merge_side_by_side():
    """One model with Experiment 1 and extraction, one scored by Experiment 2 alone, one whose raw table is gone but whose
    structured table (a copy of it plus the coded fields) is there: every row kept, each stage's columns where it ran."""
    from schemas.analysis import analysis_row_model
    from steps.merge import merge_study
    from steps.studies import load_study

    spec = load_study(2)
    inputs = {"Participant_ID": [1, 2], "Domain": ["poem", "cake"], "Goal_simplified": ["social", "both"], "State_number": [0, 3]}
    key = {"run_id": ["r", "r"], "row_index": [0, 1]}
    raw = pd.DataFrame({**inputs, **key, "replication": [0, 0], "model_name": "a", "model_id": "a", "model_response": ["x", "y"],
                        "status": "ok"})
    structured = raw.assign(Was_Wasnt=["was", "wasn't"], extraction_status="ok")
    probs = pd.DataFrame({**inputs, **key, "model_name": "b", "model_id": "b", "prob_was": [0.25, 0.75], "status": "ok"})
    flags = pd.DataFrame([{"model_name": "b", "study": 2, "row_index": 1, "replication": 0, "flag": "low_option_mass", "reason": "r"}])
    row_model = analysis_row_model(2, spec.input_model, spec.probability_summary)
    table = merge_study({"a": (raw, structured, None), "b": (None, None, probs), "c": (None, structured.assign(model_name="c"), None)},
                        flags, row_model, "v")
    assert list(zip(table.model_name, table.row_index)) == [("a", 0), ("b", 0), ("c", 0), ("a", 1), ("b", 1), ("c", 1)]
    by_model = table.set_index(["model_name", "row_index"])
    assert by_model.loc[("a", 1), "Was_Wasnt"] == "wasn't" and pd.isna(by_model.loc[("a", 1), "prob_was"])
    assert by_model.loc[("b", 1), "prob_was"] == 0.75 and pd.isna(by_model.loc[("b", 1), "model_response"])
    assert by_model.loc[("b", 1), "replication"] == 0 and by_model.loc[("b", 1), "probability_status"] == "ok"
    assert by_model.loc[("b", 1), "review_flags"] == "low_option_mass" and pd.isna(by_model.loc[("a", 1), "review_flags"])
    assert by_model.loc[("c", 0), "model_response"] == "x" and by_model.loc[("c", 0), "query_status"] == "ok"
