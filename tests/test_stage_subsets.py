"""Every stage subset the README documents runs through main() against the FAKE server, and a stage whose inputs are
missing stops with exit 2 naming it and what to run first, before any request or lock (pipeline/runner/stage_inputs.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from pipeline.cli import main

REPO = Path(__file__).resolve().parents[1]
ROWS = 2
# the subsets the README's "Running some of the stages" table lists -> the test that runs each
DOCUMENTED = {
    "query": "test_experiment_1_alone",
    "query,extract": "test_experiment_1_and_extraction_then_the_rest",
    "extract": "test_extraction_alone_on_saved_answers",
    "probabilities": "test_experiment_2_alone",
    "probabilities,validate,merge,report": "test_experiment_2_alone_to_the_report",
    "validate,merge,report": "test_experiment_1_and_extraction_then_the_rest",
    "merge,report": "test_experiment_1_and_extraction_then_the_rest",
    "report": "test_experiment_1_and_extraction_then_the_rest",
}


def _run(server, out, stages, *extra):
    return main(["run", "--endpoint", f"fake-model={server.url}", "--extractor-url", server.url, "--extractor-model", "fake-model",
                 "--studies", "2", "--limit", str(ROWS), "--stages", stages, "--output", str(out), *extra])


def _run_dir(out: Path) -> Path:
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    return run


def test_the_readme_lists_the_tested_subsets():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("### Running some of the stages", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^\| `--stages ([a-z,]+)` \|", section, re.MULTILINE)
    assert sorted(listed) == sorted(DOCUMENTED)
    assert all(name in globals() for name in DOCUMENTED.values())


def test_experiment_1_alone(tmp_path, fake_server):
    assert _run(fake_server, tmp_path, "query") == 0
    run = _run_dir(tmp_path)
    assert len(pd.read_parquet(run / "exp1" / "fake-model_study2_raw_responses.parquet")) == ROWS
    assert fake_server.completion_requests == 0 and not (run / "exp2").exists() and not (run / "analysis").exists()


def test_experiment_2_alone(tmp_path, fake_server):
    assert _run(fake_server, tmp_path, "probabilities") == 0
    run = _run_dir(tmp_path)
    assert len(pd.read_parquet(run / "exp2" / "fake-model_study2_probabilities.parquet")) == ROWS
    assert fake_server.chat_requests == 0 and not (run / "exp1").exists()


def test_experiment_2_alone_to_the_report(tmp_path, fake_server):
    """Re-scoring with a new method, or skipping the expensive generation: once 'merge: KeyError: model_name'."""
    assert _run(fake_server, tmp_path, "probabilities,validate,merge,report") == 0
    run = _run_dir(tmp_path)
    table = pd.read_parquet(run / "analysis" / "study2_analysis.parquet")
    assert len(table) == ROWS and table.replication.eq(0).all() and table.model_name.eq("fake-model").all()
    assert table.probability_status.eq("ok").all() and table.prob_was.notna().all()
    assert table.query_status.isna().all() and table.model_response.isna().all() and table.extraction_status.isna().all()
    codebook = pd.read_csv(run / "analysis" / "study2_codebook.csv").set_index("column")
    assert codebook.loc["query_status", "missing_allowed"] == "yes" and codebook.loc["Participant_ID", "missing_allowed"] == "no"
    assert (run / "report.html").exists() and fake_server.chat_requests == 0


def test_extraction_alone_on_saved_answers(tmp_path, fake_server):
    assert _run(fake_server, tmp_path, "query") == 0
    raw_path = _run_dir(tmp_path) / "exp1" / "fake-model_study2_raw_responses.parquet"
    raw, written = pd.read_parquet(raw_path), raw_path.stat().st_mtime_ns
    asked = fake_server.chat_requests
    assert _run(fake_server, tmp_path, "extract") == 0
    structured = pd.read_parquet(_run_dir(tmp_path) / "structured" / "fake-model_study2_structured.parquet")
    assert structured.model_response.tolist() == raw.model_response.tolist()  # coded from the saved answers
    assert raw_path.stat().st_mtime_ns == written and fake_server.chat_requests - asked <= ROWS  # no answer generated again


def test_experiment_1_and_extraction_then_the_rest(tmp_path, fake_server):
    """validate, merge and report on whatever finished (here Experiment 1 and extraction), then each re-made alone."""
    assert _run(fake_server, tmp_path, "query,extract") == 0
    assert _run(fake_server, tmp_path, "validate,merge,report") == 0
    run = _run_dir(tmp_path)
    table = pd.read_parquet(run / "analysis" / "study2_analysis.parquet")
    assert len(table) == ROWS and table.query_status.eq("ok").all() and table.extraction_status.notna().all()
    assert table.probability_status.isna().all() and table.prob_was.isna().all()  # Experiment 2 did not run: missing, not invented
    (run / "analysis" / "study2_analysis.parquet").unlink()
    (run / "report.html").unlink()
    assert _run(fake_server, tmp_path, "merge,report") == 0
    assert (run / "analysis" / "study2_analysis.parquet").exists() and (run / "report.html").exists()
    (run / "report.html").unlink()
    assert _run(fake_server, tmp_path, "report") == 0
    assert (run / "report.html").exists()


@pytest.mark.parametrize("stages,expected", [
    pytest.param("extract", ["extract-fake-model-study2: needs Experiment 1's answers", "run the query stage first"], id="extract"),
    pytest.param("validate", ["validate-study2: no table of study 2", "run query and/or probabilities first"], id="validate"),
    pytest.param("validate,merge,report", ["validate-study2: no table of study 2", "1 stage(s) cannot run"],  # merge, report: made here
                 id="validate-merge-report"),
    pytest.param("merge", ["merge-study2: needs validation's flagged rows", "add validate to the stages"], id="merge"),
    pytest.param("report", ["report: needs the analysis table of study 2", "run --stages validate,merge,report"], id="report"),
])
def test_missing_inputs_say_what_to_run_first_before_anything_starts(tmp_path, fake_server, capsys, stages, expected):
    assert _run(fake_server, tmp_path, stages) == 2
    err = capsys.readouterr().err
    assert all(text in err for text in expected) and "Traceback" not in err
    assert fake_server.chat_requests == fake_server.completion_requests == fake_server.tokenize_requests == 0
    assert not list(tmp_path.rglob("locks/*"))  # stopped before taking the run's locks


def test_merge_alone_needs_validation_even_when_the_tables_are_there(tmp_path, fake_server, capsys):
    assert _run(fake_server, tmp_path, "query") == 0
    capsys.readouterr()
    assert _run(fake_server, tmp_path, "merge") == 2
    err = capsys.readouterr().err
    assert "merge-study2: needs validation's flagged rows" in err and "no table" not in err
