"""The fit stage of the DAG (after merge, before the report) and ``grace-pipeline fit`` on a finished run, against the FAKE
model server (the fits themselves are tested in test_rsa_fits.py)."""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline.cli import main
from pipeline.plan import blocks, build_plan
from tests.fakes.fake_openai_server import FakeOpenAIServer
from tests.test_rsa_fits import write_pattern_file

FAST = ["--fit-resamples", "4", "--fit-starts", "2"]


def test_the_fit_node_runs_after_merge_and_before_the_report():
    nodes = {n.name: n for n in build_plan(["m"], [1, 2], ["query", "extract", "probabilities", "validate", "merge", "fit", "report"])}
    assert {"merge-study1", "merge-study2"} <= set(nodes["fit"].depends)
    assert "fit" in nodes["report"].depends
    assert not blocks("fit", "report")  # a failed fit leaves the report


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fit")
    human2 = write_pattern_file(out / "speaker_production.csv", participants=20)
    with FakeOpenAIServer(model="fake-model") as server:
        code = main(["run", "--endpoint", f"fake-model={server.url}", "--extractor-url", server.url, "--extractor-model", "fake-model",
                     "--human2", str(human2), "--output", str(out / "store"), "--alpha", "0.1", "--equivalence-margin", "0.2", *FAST])
    assert code == 0
    (run,) = (out / "store").iterdir()
    return run


def test_a_run_fits_every_source_and_the_report_shows_it(finished_run):
    for study in (1, 2):
        parameters = pd.read_parquet(finished_run / "fits" / f"study{study}_rsa_parameters.parquet")
        assert (finished_run / "fits" / f"study{study}_rsa_parameters_codebook.csv").exists()
        assert (finished_run / "fits" / f"study{study}_rsa_predictions.csv").exists()
        assert {"exp1_coded", "exp2_probabilities"} <= set(parameters.experiment.dropna())
    study2 = pd.read_parquet(finished_run / "fits" / "study2_rsa_parameters.parquet")
    assert "human" in set(study2.source) and (study2.resamples == 4).all()
    page = (finished_run / "report.html").read_text(encoding="utf-8")
    assert "Study 2: the paper's model (Yoon, Tessler, Goodman" in page and "Study 1: the paper's model" in page


def test_grace_pipeline_fit_refits_a_finished_run_without_any_model(finished_run, capsys):
    # the FAKE server is gone: nothing can be queried
    assert main(["fit", str(finished_run), "--studies", "2", "--fit-semantics-mode", "fixed", *FAST]) == 0
    printed = capsys.readouterr().out
    assert "as recorded in the run's manifest" in printed and "study 2: humans" in printed
    parameters = pd.read_csv(finished_run / "fits" / "study2_rsa_parameters.csv", keep_default_na=False, na_values=["NA"])
    assert parameters.inputs.str.contains("fixed at the norming").all() and "human" in set(parameters.source)
    report = (finished_run / "report.html").read_text(encoding="utf-8")
    assert "fixed at the norming" in report
    # the rewritten report judges the findings as the run did (its recorded --alpha and --equivalence-margin)
    assert "familywise &alpha; = 0.1)" in report and "equivalence margin <b>0.2</b>" in report


def test_a_bad_norming_file_is_refused_before_any_fitting(finished_run, tmp_path, capsys):
    before = (finished_run / "fits" / "study1_rsa_parameters.parquet").stat().st_mtime_ns
    bad = tmp_path / "semantics.csv"
    bad.write_text("state,positivity,utterance,judgment\n5,it was ___,good,1\n")
    assert main(["fit", str(finished_run), "--fit-semantics", str(bad)]) == 2
    assert "row 1 (line 2), column 'state'" in capsys.readouterr().err
    assert (finished_run / "fits" / "study1_rsa_parameters.parquet").stat().st_mtime_ns == before


def test_fit_needs_a_finished_run(tmp_path, capsys):
    assert main(["fit", str(tmp_path)]) == 2
    assert "has no analysis tables" in capsys.readouterr().err


def test_a_bad_norming_file_stops_a_run_before_any_model_is_called(tmp_path, capsys):
    bad = tmp_path / "semantics.csv"
    bad.write_text("state,positivity,utterance,judgment\n1,it is ___,good,1\n")
    with FakeOpenAIServer(model="fake-model") as server:
        code = main(["run", "--endpoint", f"fake-model={server.url}", "--studies", "2", "--fit-semantics", str(bad),
                     "--output", str(tmp_path / "out")])
        assert code == 2 and server.chat_requests == server.completion_requests == server.tokenize_requests == 0
    assert "column 'positivity'" in capsys.readouterr().err
