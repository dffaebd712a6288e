"""The CLI against the FAKE server: outputs, bad input (no model call), options, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from pipeline.cli import main
from pipeline.config import example_study_path
from tests.conftest import read_rows, write_rows
from tests.fakes.fake_openai_server import FakeOpenAIServer

REPO = Path(__file__).resolve().parents[1]
VOLATILE = ["response_timestamp", "processing_time_ms"]


def _run(server, tmp_path, *extra):
    return main(["run", "--endpoint", f"fake-model={server.url}", "--extractor-url", server.url, "--extractor-model", "fake-model",
                 "--output", str(tmp_path / "out"), *extra])


def _outputs(tmp_path):
    (run_dir,) = (tmp_path / "out").iterdir()
    return run_dir


def test_run_writes_parquet_and_csv_per_model_and_study(tmp_path, fake_server, capsys):
    assert _run(fake_server, tmp_path) == 0
    run_dir = _outputs(tmp_path)
    for study, rows in ((1, 6), (2, 8)):
        parquet = pd.read_parquet(run_dir / "exp1" / f"fake-model_study{study}_raw_responses.parquet")
        csv = pd.read_csv(run_dir / "exp1" / f"fake-model_study{study}_raw_responses.csv")
        assert len(parquet) == len(csv) == rows
        assert list(parquet.columns) == list(csv.columns)
        assert (parquet.status == "ok").all() and (parquet.run_id == run_dir.name).all()
    for study, rows in ((1, 6), (2, 8)):
        structured = pd.read_parquet(run_dir / "structured" / f"fake-model_study{study}_structured.parquet")
        assert len(structured) == rows and (structured.extraction_method == "parser").all()
        assert (structured.extraction_confidence == 1.0).all() and (structured.extraction_status == "ok").all()
        probabilities = pd.read_parquet(run_dir / "exp2" / f"fake-model_study{study}_probabilities.parquet")
        assert len(probabilities) == rows and (probabilities.status == "ok").all()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["models"]["fake-model"]["hf_id"] == "fake-model"
    assert manifest["invocations"][0]["servers"]["fake-model"]["server_version"] == "fake-0.1"
    assert set(manifest["studies"]) == {"1", "2"} and manifest["studies"]["1"]["query_template_hash"]
    out = capsys.readouterr().out
    assert "fake-model" in out and str(run_dir / "exp1" / "fake-model_study2_raw_responses.csv") in out


def test_bad_input_fails_before_any_model_call(tmp_path, fake_server, capsys):
    header, rows = read_rows(example_study_path(1))
    rows[2][header.index("access")] = "7"
    bad = write_rows(tmp_path / "bad.csv", header, rows)
    assert _run(fake_server, tmp_path, "--study1", str(bad)) == 2
    err = capsys.readouterr().err
    assert "bad.csv" in err and "row 3 (line 4), column 'access'" in err
    assert fake_server.chat_requests == 0
    assert not (tmp_path / "out").exists()


def test_problems_in_both_files_are_reported_together(tmp_path, capsys):
    header1, rows1 = read_rows(example_study_path(1))
    rows1[0][header1.index("observe")] = "x"
    header2, rows2 = read_rows(example_study_path(2))
    rows2[1][header2.index("State")] = "9 hearts"
    bad1 = write_rows(tmp_path / "s1.csv", header1, rows1)
    bad2 = write_rows(tmp_path / "s2.csv", header2, rows2)
    assert main(["validate", "--study1", str(bad1), "--study2", str(bad2)]) == 2
    err = capsys.readouterr().err
    assert "s1.csv: 1 problem" in err and "s2.csv: 1 problem" in err


def test_validate_reports_rows(capsys):
    assert main(["validate"]) == 0
    out = capsys.readouterr().out
    assert "6 rows OK" in out and "8 rows OK" in out


def test_wrong_model_on_endpoint_is_caught_before_rows_are_sent(tmp_path, fake_server, capsys):
    code = main(["run", "--models", "gemma-2-9b-it", "--endpoint", f"gemma-2-9b-it={fake_server.url}", "--output", str(tmp_path / "o")])
    assert code == 4
    assert "serves ['fake-model'], not 'google/gemma-2-9b-it'" in capsys.readouterr().err
    assert fake_server.chat_requests == 0


def test_every_replica_is_checked_so_answers_of_another_model_never_mix_in(tmp_path, fake_server, capsys):
    from tests.fakes.fake_openai_server import FakeOpenAIServer

    with FakeOpenAIServer(model="other-model") as other:
        code = main(["run", "--endpoint", f"fake-model={fake_server.url},{other.url}", "--studies", "2", "--stages", "query",
                     "--output", str(tmp_path / "o")])
        other_answers = other.chat_requests
    assert code == 4
    assert f"the server at {other.url} serves ['other-model'], not 'fake-model'" in capsys.readouterr().err
    assert fake_server.chat_requests == other_answers == 0


def test_vllm_model_without_endpoint_is_a_clear_error(tmp_path, capsys):
    assert main(["run", "--models", "llama-3.1-8b-instruct", "--output", str(tmp_path)]) == 2
    assert "--endpoint llama-3.1-8b-instruct=URL" in capsys.readouterr().err


@pytest.mark.parametrize("args,message", [
    pytest.param(["--endpoint", "nourl"], "MODEL=URL", id="endpoint-syntax"),
    pytest.param(["--max-tokens", "0"], "max_tokens", id="max-tokens-zero"),
    pytest.param(["--studies", "3"], "unknown study", id="unknown-study"),
    pytest.param(["--temperature", "9"], "temperature", id="temperature-range"),
    pytest.param(["--study1-exclude", "prior,mood"], "unknown check 'mood'", id="unknown-exclusion-check"),
    pytest.param(["--equivalence-margin", "0"], "equivalence_margin", id="margin-zero"),
    pytest.param(["--alpha", "1"], "alpha", id="alpha-one"),
    pytest.param(["--alpha", "0.5"], "alpha", id="alpha-lenient"),
])
def test_invalid_options(tmp_path, capsys, args, message):
    try:
        code = main(["run", "--output", str(tmp_path), *args])
    except SystemExit as exc:  # argparse rejects some values itself
        code = exc.code
    assert code == 2
    assert message in capsys.readouterr().err


def test_limit_studies_and_replications(tmp_path, fake_server):
    assert _run(fake_server, tmp_path, "--studies", "2", "--limit", "3", "--replications", "2") == 0
    frame = pd.read_parquet(_outputs(tmp_path) / "exp1" / "fake-model_study2_raw_responses.parquet")
    assert len(frame) == 6 and not (_outputs(tmp_path) / "exp1" / "fake-model_study1_raw_responses.parquet").exists()


def test_too_many_failures_exit_3_and_keep_rows(tmp_path, capsys):
    header, rows = read_rows(example_study_path(2))
    for row in rows[:4]:
        row[header.index("Scenario")] = "REJECT " + row[header.index("Scenario")]
    poisoned = write_rows(tmp_path / "s2.csv", header, rows)
    with FakeOpenAIServer() as server:
        code = _run(server, tmp_path, "--studies", "2", "--study2", str(poisoned))
    assert code == 3
    assert "4 of 8 rows failed" in capsys.readouterr().out
    frame = pd.read_csv(_outputs(tmp_path) / "exp1" / "fake-model_study2_raw_responses.csv")
    assert (frame.status == "failed").sum() == 4 and (frame.status == "ok").sum() == 4


def _big_study1(tmp_path, copies=15):
    header, rows = read_rows(example_study_path(1))
    big = [[str(100 + c)] + r[1:] for c in range(copies) for r in rows]
    return write_rows(tmp_path / "study1_big.csv", header, big)


def _cli(*args):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_sigkill_then_rerun_equals_uninterrupted_run(tmp_path):
    study = _big_study1(tmp_path)  # 90 rows
    with FakeOpenAIServer(latency_ms=40) as server:
        common = ["--endpoint", f"fake-model={server.url}", "--studies", "1", "--study1", str(study), "--concurrency", "3",
                  "--stages", "query"]
        killed = _cli(*common, "--output", str(tmp_path / "a"))
        checkpoint = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            found = list((tmp_path / "a").glob("*/checkpoints/exp1/*.jsonl"))
            if found and len(found[0].read_text().splitlines()) > 30:
                checkpoint = found[0]
                break
            time.sleep(0.02)
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        assert checkpoint is not None, "the run never reached 30 rows"
        done_before = len(checkpoint.read_text().splitlines()) - 1
        assert done_before < 90  # really killed mid-way
        requests_before = server.chat_requests

        resumed = _cli(*common, "--output", str(tmp_path / "a"))
        assert resumed.wait(120) == 0, resumed.stdout.read().decode()
        assert server.chat_requests - requests_before <= 90 - done_before + 3  # only unfinished rows (+ in flight at kill)

        clean = _cli(*common, "--output", str(tmp_path / "b"))
        assert clean.wait(120) == 0

    (a,) = (tmp_path / "a").glob("*/exp1/fake-model_study1_raw_responses.parquet")
    (b,) = (tmp_path / "b").glob("*/exp1/fake-model_study1_raw_responses.parquet")
    resumed_frame, clean_frame = (pd.read_parquet(p).drop(columns=VOLATILE) for p in (a, b))
    assert len(resumed_frame) == 90 and resumed_frame.row_index.is_unique
    pd.testing.assert_frame_equal(resumed_frame, clean_frame)


REGISTRY = """models:
  - name: acme-chat
    hf_id: acme/chat-7b
    served_name: fake-model
    system_role: false
  - name: gemma-2-9b-it
    max_model_len: 2048
"""


def test_registry_file_adds_models_in_the_local_runner_and_the_lineup(tmp_path, fake_server, capsys):
    registry = tmp_path / "my_models.yaml"
    registry.write_text(REGISTRY)
    assert main(["models", "--registry", str(registry)]) == 0
    listing = capsys.readouterr().out
    assert "acme-chat" in listing and "acme/chat-7b" in listing and "llama-3.1-8b-instruct" in listing  # merged, not replaced
    code = main(["run", "--registry", str(registry), "--models", "acme-chat", "--endpoint", f"acme-chat={fake_server.url}",
                 "--studies", "2", "--limit", "2", "--stages", "query,probabilities", "--output", str(tmp_path / "out")])
    assert code == 0, capsys.readouterr()
    run_dir = _outputs(tmp_path)
    probabilities = pd.read_parquet(run_dir / "exp2" / "acme-chat_study2_probabilities.parquet")
    assert (probabilities.status == "ok").all() and (probabilities.model_id == "fake-model").all()
    # the registry's system_role: false reached both experiments: the system text is folded into the user turn
    chats = [b for path, b in fake_server.scoring_requests if path == "/tokenize" and "messages" in b]
    assert chats and all([m["role"] for m in b["messages"]] == ["user"] for b in chats)


def test_a_bad_registry_file_names_the_file_and_entry(tmp_path, capsys):
    registry = tmp_path / "bad.yaml"
    registry.write_text("models:\n  - name: x\n    hf_id: a/b\n    gpus: -1\n")
    assert main(["models", "--registry", str(registry)]) == 2
    err = capsys.readouterr().err
    assert str(registry) in err and "entry 1 ('x')" in err and "gpus" in err


def test_analysis_options_reach_the_run_configuration():
    from pipeline.cli import build_parser
    from pipeline.cli_options import config_from_args

    args = build_parser().parse_args(["run", "--equivalence-margin", "0.2", "--study1-exclude", "prior,knowledge", "--alpha", "0.01"])
    analysis = config_from_args(args).analysis
    assert analysis.equivalence_margin == 0.2 and analysis.study1_exclude == ("prior", "knowledge") and analysis.alpha == 0.01
    assert config_from_args(build_parser().parse_args(["run"])).analysis.study1_exclude == ()

