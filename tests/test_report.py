"""The quality report: content from real run tables, and a screenshot in a real headless browser."""

from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pytest

from pipeline.cli import main
from steps.report import render_report
from steps.store import LocalStore
from steps.tables import read_table
from tests.fakes.fake_openai_server import FakeOpenAIServer
from tests.human_data import write_human1, write_human2

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    human = tmp_path_factory.mktemp("human")
    with FakeOpenAIServer(model="fake-model") as a, FakeOpenAIServer(model="other-model") as b:
        assert main(["run", "--models", "fake-model,other-model", "--endpoint", f"fake-model={a.url}", "--endpoint", f"other-model={b.url}",
                     "--extractor-url", a.url, "--extractor-model", "fake-model", "--output", str(out),
                     "--human1", str(write_human1(human / "h1.csv")), "--human2", str(write_human2(human / "h2.csv"))]) == 0
    (run,) = out.iterdir()
    return run / "report.html"


def test_report_is_self_contained_with_every_section(report):
    text = report.read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text  # opens offline
    # Exp 2 distributions, per study the per-item effects, the scatter and the lines, the papers' models fitted (one per
    # study: steps/report_fits.py), confidence and timing
    assert text.count("data:image/png;base64,") == 10
    assert "Study 1: each finding per unit" not in text  # figure titles are drawn inside the images; each study has one
    for study in (1, 2):
        section = text.split(f"<h2>Study {study}: the paper's findings")[1].split("<h2>")[0]
        assert section.count("data:image/png;base64,") == 1
    for heading in ("Validation", "Rows per model and study", "Study 1: extracted answers by access x observe",
                    "Study 1: Experiment 2 distributions", "Study 2: coded answers (Experiment 1) by goal x state",
                    "Study 1: the paper's findings (Goodman &amp; Stuhlmueller 2013)", "Study 2: the paper's findings (Yoon et al. 2020)",
                    "Study 1: models compared with human participants", "Study 2: models compared with human participants",
                    "Study 1: the paper's model (Goodman &amp; Stuhlmüller 2013)",
                    "Study 2: the paper's model (Yoon, Tessler, Goodman &amp; Frank 2020)", "Extraction confidence and timing"):
        assert f"<h2>{heading}</h2>" in text
    assert "fake-model" in text and "other-model" in text
    assert "600 trials from 50 participants" in text and "180 trials from 20 participants" in text
    assert "0.580 [0.442, 0.709] n=50" in text  # the synthetic cell where 29 of 50 say "It was terrible" (Jeffreys)
    assert "No human data given" not in text
    assert "equivalence margin <b>0.1</b>" in text and "Exclusions: none" in text
    assert "humans: noise ceiling" in text and "baseline: goal-blind (state only)" in text
    assert "<b>Self-check</b>" in text  # this synthetic human file lacks the paper's effects: said, not hidden
    assert "the human file reproduces" in text


def test_the_study_files_utterance_column_is_not_human_data(report):
    """The example study 2 file's Utterance column has 'It was okay' and others; none of it is shown as a human choice."""
    text = report.read_text(encoding="utf-8")
    assert "It was okay" not in text and "Utterance" not in text


def test_the_long_table_for_r_has_hand_computable_values(report):
    table = read_table(LocalStore(report.parent), "comparison/human_model_comparison")
    assert (report.parent / "comparison" / "human_model_comparison.csv").exists()
    human = table[(table.source == "human") & (table.study == 2)]
    cell = human[(human.goal == "informational") & (human.state == 0) & (human.option == "It was terrible")].iloc[0]
    assert cell.value == pytest.approx(0.58) and cell.n == 50 and cell.participants == 50 and cell.interval.startswith("Jeffreys")
    assert len(human) == 96
    bets = table[(table.source == "human") & (table.measure == "bet")]
    full = bets[(bets.access == 3) & (bets.observe == 2)].set_index("option").value
    assert full["2"] == pytest.approx(np.mean([(80 + p % 5) / 100 for p in range(20)]))
    models = table[table.source == "model"]
    assert set(models.model) == {"fake-model", "other-model"}
    assert set(models.experiment) == {"exp1_coded", "exp2_probabilities"}
    exp2 = models[(models.study == 2) & (models.experiment == "exp2_probabilities")]
    assert exp2.groupby(["model", "cell"]).value.sum().round(9).eq(1.0).all()  # each cell's 8 utterance means sum to 1
    assert set(table.measure) == {"utterance", "bet", "prior", "knowledge"}


def test_without_human_data_the_report_says_so_in_one_line(report):
    store = LocalStore(report.parent)
    tables = {n: read_table(store, f"analysis/study{n}_analysis") for n in (1, 2)}
    text = render_report(tables, {}, "r", "v")
    assert "No human data given (--human1): the models are shown alone." in text
    assert "No human data given (--human2): the models are shown alone." in text
    assert "Agreement per model" not in text and "Goodman &amp; Stuhlmueller" in text  # the paper's findings need no human file


def test_report_renders_in_a_headless_browser(report, tmp_path):
    if CHROMIUM is None:  # in CI (.ci/run sets CI and installs chromium) a missing browser is a failure, not a skip
        (pytest.fail if os.environ.get("CI") else pytest.skip)("Debian's chromium is not installed (.ci/run installs it)")
    shot = tmp_path / "report.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1300,5000", f"--screenshot={shot}",
                    report.as_uri()], check=True, capture_output=True, timeout=120)
    from PIL import Image

    image = np.asarray(Image.open(shot).convert("RGB"))
    assert image.shape[:2] == (5000, 1300)
    painted = (image < 250).any(axis=2)
    assert painted.mean() > 0.03  # text, tables and plots, not a blank page
    colours = {tuple(c) for c in image[::7, ::7].reshape(-1, 3)}
    assert len(colours) > 50  # the embedded plots are drawn (bars and lines in several colours)
    rows_with_ink = np.nonzero(painted.any(axis=1))[0]
    assert rows_with_ink.max() > 2500  # the page is long enough to hold every section
