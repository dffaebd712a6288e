"""End to end with the REAL embedded llama.cpp server and Gemma 3 270M GGUF (slow: ~1 min).

This is the README's first command: ``grace-pipeline run`` with no arguments.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.embedded


def _command() -> list[str]:
    exe = shutil.which("grace-pipeline", path=str(Path(sys.executable).parent))
    return [exe, "run"] if exe else [sys.executable, "-m", "pipeline.cli", "run"]


def test_default_run_on_the_embedded_model(tmp_path):
    done = subprocess.run(_command(), cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    (run_dir,) = (tmp_path / "grace-output").iterdir()
    for study, rows in ((1, 6), (2, 8)):
        frame = pd.read_parquet(run_dir / "exp1" / f"gemma-3-270m_study{study}_raw_responses.parquet")
        assert len(frame) == rows and (frame.status == "ok").all()
        assert frame.model_response.str.len().gt(0).mean() >= 0.5  # a base model may answer with nothing now and then
        assert (frame.completion_tokens > 0).all() and (frame.processing_time_ms > 0).all()
        assert frame.processing_time_ms.nunique() == rows  # each row's own latency, not a batch average
        assert (frame.model_name == "gemma-3-270m").all() and frame.prompt_hash.is_unique
    study2_columns = [f"prob_{f}_{a}" for f in ("was", "wasnt") for a in ("terrible", "bad", "good", "amazing")]
    for study, columns in ((1, [f"state2_prob_{p}" for p in range(0, 101, 10)]), (2, study2_columns)):
        frame = pd.read_parquet(run_dir / "exp2" / f"gemma-3-270m_study{study}_probabilities.parquet")
        assert (frame.status == "ok").all() and frame.scoring_method.eq("exact").all()
        values = frame[columns].to_numpy(dtype=float)  # (they sum to 1 by construction: a softmax)
        assert ((values > 0) & (values < 1)).all() and (values.max(axis=1) - values.min(axis=1) > 1e-6).all()  # not uniform
        mass = frame["state2_option_mass" if study == 1 else "option_mass"]
        assert mass.gt(0).all() and mass.le(1).all()
    coded_by_llm = 0
    for study, rows in ((1, 6), (2, 8)):
        structured = pd.read_parquet(run_dir / "structured" / f"gemma-3-270m_study{study}_structured.parquet")
        assert len(structured) == rows and structured.extraction_confidence.between(0, 1).all()
        assert set(structured.extraction_status) <= {"ok", "partial", "not_found"}  # the extractor itself never failed
        llm_rows = structured.extraction_method.str.contains("llm")
        coded_by_llm += int(llm_rows.sum())
        assert (structured.extractor_model[llm_rows] == "gemma-3-270m").all()
    assert coded_by_llm > 0  # the base model's rambling answers need the LLM tier: the check above is not vacuous
    for study in (1, 2):
        assert (run_dir / "validation" / f"study{study}_validation.json").exists()
        analysis = pd.read_parquet(run_dir / "analysis" / f"study{study}_analysis.parquet")
        assert len(analysis) == {1: 6, 2: 8}[study] and (analysis.model_name == "gemma-3-270m").all()
    assert (run_dir / "report.html").exists() and "Quality report: file://" in done.stdout
    assert "gemma-3-270m" in done.stdout and str(run_dir) in done.stdout
    assert "rows" in done.stderr  # progress was shown

    again = subprocess.run(_command(), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0
    assert "query-gemma-3-270m-study1: resuming, 6 of 6 rows already done" in again.stderr  # nothing is redone
    assert "probabilities-gemma-3-270m-study2: resuming, 8 of 8 rows already done" in again.stderr


def _llama_servers() -> set[int]:
    found = set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if b"pipeline.model_server.embedded_server" in (proc / "cmdline").read_bytes():
                    found.add(int(proc.name))
            except OSError:
                pass
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and PR_SET_PDEATHSIG")
def test_sigkilled_run_leaves_no_server_behind(tmp_path):
    import signal
    import time

    before = _llama_servers()
    run = subprocess.Popen(_command(), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(tmp_path.glob("grace-output/*/checkpoints/exp1/*.jsonl")):
        time.sleep(0.2)  # checkpoints are opened once the servers answer
    started = _llama_servers() - before
    run.send_signal(signal.SIGKILL)
    run.wait()
    assert started, "the embedded servers never started"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _llama_servers() & started:
        time.sleep(0.1)
    assert not _llama_servers() & started
