"""Every exit code of the documented table (steps.errors.EXIT_CODES), each provoked for real through main()
against the FAKE server, and the README's table equal to it."""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

import pandas as pd
import pytest

import pipeline.runner.local
from pipeline.cli import build_parser, main
from pipeline.config import example_study_path
from steps.errors import EXIT_CODES
from steps.run_lock import RunLock
from steps.store import LocalStore
from tests.conftest import read_rows, write_rows
from tests.fakes.fake_openai_server import FakeOpenAIServer

REPO = Path(__file__).resolve().parents[1]


def _run(server, out, *extra):
    return main(["run", "--endpoint", f"fake-model={server.url}", "--extractor-url", server.url, "--extractor-model", "fake-model",
                 "--output", str(out), *extra])


def test_readme_table_and_help_are_the_table():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| (\d+) \| (.*) \|$", text.split("## Exit codes", 1)[1], re.MULTILINE))
    assert {int(k): v for k, v in rows.items()} == EXIT_CODES
    epilog = build_parser().epilog
    assert all(f"  {code:>3}  " in epilog for code in EXIT_CODES)


def test_0_done(tmp_path, fake_server):
    assert _run(fake_server, tmp_path, "--studies", "2", "--limit", "2", "--stages", "query") == 0


def test_1_unexpected_error_is_recorded_and_the_summary_printed(tmp_path, fake_server, monkeypatch, capsys):
    def broken(*args):
        raise RuntimeError("a bug in merge")

    monkeypatch.setattr(pipeline.runner.local, "run_merge", broken)
    assert _run(fake_server, tmp_path, "--studies", "2", "--limit", "2", "--stages", "query,validate,merge") == 1
    out, err = capsys.readouterr()
    assert "merge-study2: unexpected RuntimeError: a bug in merge" in out and "Traceback" in err
    assert "query" in out and "validate" in out  # the summary covers every node


def test_2_a_folder_given_as_a_study_file(tmp_path, fake_server, capsys):
    (tmp_path / "folder.csv").mkdir()
    assert _run(fake_server, tmp_path / "out", "--studies", "1", "--study1", str(tmp_path / "folder.csv")) == 2
    assert "this is a folder, not a CSV file" in capsys.readouterr().err
    assert fake_server.chat_requests == 0


def test_2_checkpoint_mismatch_is_found_before_any_request(tmp_path, fake_server, capsys):
    common = ["--run-id", "fixed", "--studies", "1", "--limit", "2", "--stages", "query,probabilities"]
    assert _run(fake_server, tmp_path, *common) == 0
    chat, completions = fake_server.chat_requests, fake_server.completion_requests
    assert _run(fake_server, tmp_path, *common, "--temperature", "0.3") == 2
    assert "different sampling" in capsys.readouterr().err
    assert (fake_server.chat_requests, fake_server.completion_requests) == (chat, completions)  # nothing was sent


def test_3_too_many_rows_failed(tmp_path, capsys):
    header, rows = read_rows(example_study_path(2))
    for row in rows[:3]:
        row[header.index("Scenario")] = "REJECT " + row[header.index("Scenario")]
    poisoned = write_rows(tmp_path / "s2.csv", header, rows)
    with FakeOpenAIServer() as server:
        assert _run(server, tmp_path / "out", "--studies", "2", "--study2", str(poisoned), "--stages", "query") == 3


def test_4_unreachable_extractor(tmp_path, fake_server, capsys):
    code = main(["run", "--endpoint", f"fake-model={fake_server.url}", "--extractor-url", "http://127.0.0.1:9",
                 "--studies", "2", "--limit", "2", "--stages", "query,extract", "--output", str(tmp_path)])
    assert code == 4  # was 3 ("rows failed") after every row had failed
    assert "the LLM extractor cannot be reached" in capsys.readouterr().err
    assert fake_server.chat_requests == 0


def test_4_unreachable_model_server(tmp_path, capsys):
    assert main(["run", "--endpoint", "fake-model=http://127.0.0.1:9", "--stages", "query", "--output", str(tmp_path)]) == 4


def test_5_validation_catches_codes_of_another_answer(tmp_path, fake_server, capsys):
    common = ["--studies", "2", "--limit", "3"]
    assert _run(fake_server, tmp_path, *common, "--stages", "query,extract") == 0
    (raw_path,) = tmp_path.glob("*/exp1/fake-model_study2_raw_responses.parquet")
    raw = pd.read_parquet(raw_path)
    raw.loc[1, "model_response"] = "It was terrible."  # as if another run had rewritten the answers
    raw.to_parquet(raw_path, index=False)
    assert _run(fake_server, tmp_path, *common, "--stages", "validate") == 5
    assert "coded from an answer that is not the raw responses' answer" in capsys.readouterr().out


def _enospc_for(part: str, monkeypatch):
    """Simulate a full disk: fsync of any file whose path contains ``part`` fails with ENOSPC."""
    real = os.fsync

    def fsync(fd):
        if part in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.parametrize("part", ["analysis", "checkpoints"])
def test_6_full_disk_is_a_storage_error_leaves_no_temp_file_and_the_rerun_resumes(tmp_path, fake_server, monkeypatch, capsys, part):
    common = ["--studies", "2", "--limit", "4", "--stages", "query,extract,validate,merge"]
    _enospc_for(part, monkeypatch)
    assert _run(fake_server, tmp_path, *common) == 6
    out, err = capsys.readouterr()
    assert "the disk is full: free some space" in out + err and "Traceback" not in err
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    monkeypatch.undo()
    sent = fake_server.chat_requests
    assert _run(fake_server, tmp_path, *common) == 0
    (run_dir,) = tmp_path.iterdir()
    assert len(pd.read_parquet(run_dir / "analysis" / "study2_analysis.parquet")) == 4
    if part == "analysis":
        assert fake_server.chat_requests == sent  # every finished row was kept: nothing redone


def test_7_run_locked(tmp_path, fake_server, capsys):
    with RunLock(LocalStore(tmp_path / "fixed"), ["query-fake-model-study2"]):
        assert _run(fake_server, tmp_path, "--run-id", "fixed", "--studies", "2", "--stages", "query") == 7
    assert "is held by" in capsys.readouterr().err and fake_server.chat_requests == 0


def test_130_interrupted(tmp_path, monkeypatch, capsys):
    async def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr("pipeline.cli.run_local", interrupted)
    assert main(["run", "--output", str(tmp_path)]) == 130
    assert "run the same command again to resume" in capsys.readouterr().err
