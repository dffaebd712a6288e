"""The quality report: content from real run tables, and a screenshot in a real headless browser."""

from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pytest

from pipeline.cli import main
from steps.report import human_choice, js_divergence
from tests.fakes.fake_openai_server import FakeOpenAIServer

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    with FakeOpenAIServer(model="fake-model") as a, FakeOpenAIServer(model="other-model") as b:
        assert main(["run", "--models", "fake-model,other-model", "--endpoint", f"fake-model={a.url}", "--endpoint", f"other-model={b.url}",
                     "--extractor-url", a.url, "--extractor-model", "fake-model", "--output", str(out)]) == 0
    (run,) = out.iterdir()
    return run / "report.html"


def test_report_is_self_contained_with_every_section(report):
    text = report.read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text  # opens offline
    assert text.count("data:image/png;base64,") == 3
    for heading in ("Validation", "Rows per model and study", "Study 1: extracted answers by access x observe",
                    "Study 1: Experiment 2 distributions", "Study 2: coded answers (Experiment 1) by goal x state",
                    "Study 2: models compared with the human participants", "Extraction confidence and timing"):
        assert f"<h2>{heading}</h2>" in text
    assert "It was okay" in text  # the human answer outside the 8 is shown, not dropped
    assert "fake-model" in text and "other-model" in text


def test_human_choices_and_divergence():
    assert human_choice("It wasn't terrible") == "It wasn't terrible"
    assert human_choice("It was okay") == "other: It was okay"
    assert human_choice(None) == "other: (empty)"
    p = np.array([0.5, 0.5, 0.0])
    assert js_divergence(p, p) == pytest.approx(0.0)
    assert js_divergence(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(1.0)


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
