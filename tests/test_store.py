"""The storage layer: safe keys, local folders, and a REAL S3 server (SeaweedFS) for every
artifact type, kill-and-resume, wrong credentials, and the endpoint going away and back.

Model calls go to the FAKE OpenAI server; storage is real.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest

from pipeline.config import example_study_path
from pipeline.registry import model_slug
from schemas.raw_responses import raw_response_row_model
from steps.checkpoint import ObjectCheckpoint, open_checkpoint
from steps.errors import CheckpointMismatchError, StorageAccessError, StorageError
from steps.store import LocalStore, S3Store, open_store, read_url, safe_key
from steps.studies import load_study
from steps.tables import read_table, write_table
from tests.conftest import read_rows, write_rows
from tests.fakes.fake_openai_server import FakeOpenAIServer
from tests.s3_server import ACCESS_KEY, SECRET_KEY, SeaweedS3

REPO = Path(__file__).resolve().parents[1]
VOLATILE = ["response_timestamp", "processing_time_ms"]


def _prefix() -> str:
    return f"s3://grace/t-{uuid.uuid4().hex[:8]}"


# ---- keys and local folders -------------------------------------------------------------

@pytest.mark.parametrize("bad", ["..", "a/../b", "/etc/passwd", "", "a//b", ".hidden", "a\\b", "x/./y", "a b"])
def test_unsafe_keys_are_refused(bad):
    with pytest.raises(ValueError, match="unsafe storage key"):
        safe_key(bad)


def test_model_ids_become_keys_inside_the_run():
    for name in ("meta-llama/Llama-3.1-8B-Instruct", "../../etc/passwd", "/abs/model", "deepseek-ai/DeepSeek-R1:8b"):
        key = safe_key("run-1", "exp1", f"{model_slug(name)}_study1_raw_responses.parquet")
        assert key.startswith("run-1/exp1/") and ".." not in key.split("/")
    assert model_slug("meta-llama/Llama-3.1-8B-Instruct") == "meta-llama--llama-3.1-8b-instruct"


def test_store_urls(tmp_path):
    assert isinstance(open_store(str(tmp_path)), LocalStore)
    assert open_store(f"file://{tmp_path}").local_path() == tmp_path
    store = open_store("s3://bucket/team/runs/", s3_endpoint="http://127.0.0.1:1")
    assert isinstance(store, S3Store) and store.uri("a/b.csv") == "s3://bucket/team/runs/a/b.csv"
    assert store.child("run-1").uri() == "s3://bucket/team/runs/run-1"
    for bad in ("s3://", "s3://bucket/../x", "gs://bucket/x"):
        with pytest.raises(StorageAccessError):
            open_store(bad, s3_endpoint="http://127.0.0.1:1")


def test_local_writes_are_atomic_and_listed(tmp_path):
    store = LocalStore(tmp_path).child("run-1")
    store.write_bytes("exp1/a.csv", b"x")
    store.write_bytes("exp1/a.csv", b"y")
    assert store.read_bytes("exp1/a.csv") == b"y" and store.read_bytes("exp1/missing") is None
    assert store.list("exp1") == ["exp1/a.csv"] and not list((tmp_path / "run-1" / "exp1").glob(".*"))
    store.delete("exp1/a.csv")
    assert store.list("exp1") == []


# ---- real S3: every artifact type -------------------------------------------------------

def test_table_round_trip_through_s3(s3_env):
    store = open_store(_prefix()).child("run-1")
    spec = load_study(1)
    frame = pd.DataFrame([{"row_index": 0, "participant_id": 7, "story_shortname": "exam", "model_name": "m",
                           "model_response": "“Ünïcödé” 3",
                           "status": "ok", "replication": 0, "response_timestamp": "2026-11-25T10:00:00+00:00"}])
    uris = write_table(frame, raw_response_row_model(spec.input_model), store, "exp1/m_study1_raw_responses")
    assert uris == [f"{store.uri()}/exp1/m_study1_raw_responses.parquet", f"{store.uri()}/exp1/m_study1_raw_responses.csv"]
    back = read_table(store, "exp1/m_study1_raw_responses")
    assert back.model_response[0] == "“Ünïcödé” 3" and str(back.participant_id.dtype) == "Int64"
    assert str(back.response_timestamp.dtype).startswith("datetime64") and back.response_timestamp.dt.tz is not None
    csv = pd.read_csv(io.BytesIO(store.read_bytes("exp1/m_study1_raw_responses.csv")))
    assert csv.model_response[0] == "“Ünïcödé” 3"
    assert read_table(store, "exp1/absent") is None
    assert store.read_bytes("exp1") is None  # a "folder" prefix is not an object


def test_object_checkpoint_segments_compaction_and_fingerprint(s3_env):
    store = open_store(_prefix())
    checkpoint = ObjectCheckpoint(store, "checkpoints/exp1/m_study1", {"run_id": "r"}, flush_rows=2, flush_s=3600)
    assert checkpoint.load() == {}
    for i in range(5):
        checkpoint.append({"row_index": i, "replication": 0, "status": "failed" if i == 3 else "ok"})
    assert len(store.list("checkpoints/exp1/m_study1")) == 2  # 4 rows flushed, 1 pending
    checkpoint.close()
    again = ObjectCheckpoint(store, "checkpoints/exp1/m_study1", {"run_id": "r"})
    assert sorted(again.load()) == [(i, 0) for i in range(5)]
    assert len(store.list("checkpoints/exp1/m_study1")) == 1  # compacted
    again.append({"row_index": 3, "replication": 0, "status": "ok"})  # a retried row: the later record wins
    again.close()
    assert open_checkpoint(store, "checkpoints/exp1/m_study1", {"run_id": "r"}).load()[(3, 0)]["status"] == "ok"
    with pytest.raises(CheckpointMismatchError, match="run_id"):
        ObjectCheckpoint(store, "checkpoints/exp1/m_study1", {"run_id": "other"}).load()


def _fake_run(server, store_url, *extra, env=None, cwd=REPO):
    args = [sys.executable, "-m", "pipeline.cli", "run", "--endpoint", f"fake-model={server.url}", "--extractor-url", server.url,
            "--extractor-model", "fake-model", "--store", store_url, *extra]
    return subprocess.Popen(args, cwd=cwd, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_whole_run_in_s3_matches_a_local_run(s3_env, tmp_path):
    url = _prefix()
    with FakeOpenAIServer() as server:
        remote = _fake_run(server, url, cwd=tmp_path)
        out, _ = remote.communicate(timeout=300)
        assert remote.returncode == 0, out
        local = _fake_run(server, str(tmp_path / "local"))
        assert local.wait(300) == 0
    (run_dir,) = (tmp_path / "local").iterdir()
    store = open_store(url).child(run_dir.name)
    assert f"{store.uri()}/analysis/study1_analysis.parquet" in out and f"Quality report: {store.uri()}/report.html" in out
    assert list(tmp_path.iterdir()) == [tmp_path / "local"]  # nothing written next to the S3 run

    local_keys = {p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*") if p.is_file()}
    remote_keys = set(store.list(""))
    artifacts = {k for k in local_keys if not k.startswith(("checkpoints/", "logs/"))}
    assert artifacts and artifacts <= remote_keys  # tables, CSVs, codebooks, validation, manifest, report
    for key in artifacts:
        if key.endswith(".parquet"):
            mine, theirs = pd.read_parquet(run_dir / key), read_table(store, key.removesuffix(".parquet"))
            assert list(mine.columns) == list(theirs.columns) and len(mine) == len(theirs), key
            drop = [c for c in mine.columns if c in VOLATILE or "timestamp" in c or c.endswith("_ms") or c == "code_version"]
            pd.testing.assert_frame_equal(mine.drop(columns=drop), theirs.drop(columns=drop), check_categorical=False)
    checkpoints = {k.rsplit("/", 1)[0] for k in remote_keys if k.startswith("checkpoints/")}
    assert checkpoints == {k.removesuffix(".jsonl") for k in local_keys if k.startswith("checkpoints/")}
    manifest = json.loads(store.read_bytes("manifest.json"))
    assert manifest["invocations"][0]["config"]["store"] == url
    assert "<html" in store.read_bytes("report.html").decode()[:200].lower()


def test_study_input_read_from_s3(s3_env, tmp_path):
    url = _prefix()
    open_store(url).write_bytes("inputs/study2.csv", Path(example_study_path(2)).read_bytes())
    assert read_url(f"{url}/inputs/study2.csv") == Path(example_study_path(2)).read_bytes()
    with FakeOpenAIServer() as server:
        run = _fake_run(server, str(tmp_path / "o"), "--studies", "2", "--study2", f"{url}/inputs/study2.csv", "--stages", "query")
        out, _ = run.communicate(timeout=120)
    assert run.returncode == 0, out
    missing = _fake_run(server, str(tmp_path / "o"), "--studies", "2", "--study2", f"{url}/inputs/nope.csv")
    out, _ = missing.communicate(timeout=60)
    assert missing.returncode == 2 and f"{url}/inputs/nope.csv: 1 problem(s)" in out and "file not found" in out


# ---- faults -----------------------------------------------------------------------------

def _big_study1(tmp_path, copies):
    header, rows = read_rows(example_study_path(1))
    return write_rows(tmp_path / "study1_big.csv", header, [[str(100 + c)] + r[1:] for c in range(copies) for r in rows])


def _wait_for_segments(store, prefix, at_least, process, timeout_s=60):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        if len(store.list(prefix)) >= at_least:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("layout", ["everything in S3", "cluster step: tables local, checkpoints in S3"])
def test_killed_stage_resumes_from_s3_with_empty_local_disk(s3_env, tmp_path, layout):
    study, url = _big_study1(tmp_path, 15), _prefix()  # 90 rows
    common = ["--studies", "1", "--study1", str(study), "--concurrency", "3", "--stages", "query", "--run-id", "kill-test"]
    cluster = layout.startswith("cluster")
    store_url, extra = ("work", ["--checkpoint-store", url]) if cluster else (url, [])
    common += extra
    store = open_store(url).child("kill-test")
    with FakeOpenAIServer() as server:
        server.hold_after = 45  # the first run cannot finish before it is killed, whatever the machine's load
        first_pod = tmp_path / "pod1"
        first_pod.mkdir()
        killed = _fake_run(server, store_url, *common, cwd=first_pod)
        # one segment is enough: rows held by the server after it are never saved, so what resumes is what was committed
        assert _wait_for_segments(store, "checkpoints/exp1/fake-model_study1", 1, killed), "no checkpoint segment was written"
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        server.hold_after = None
        saved = store.list("checkpoints/exp1/fake-model_study1")
        rows_saved = sum(len(store.read_bytes(k).splitlines()) - 1 for k in saved)
        assert 0 < rows_saved < 90
        tables_after_kill = open_store(str(first_pod / "work")).child("kill-test") if cluster else store
        assert read_table(tables_after_kill, "exp1/fake-model_study1_raw_responses") is None  # no table before the stage finished
        requests_before = server.chat_requests

        second_pod = tmp_path / "pod2"  # a new process with an empty local disk
        second_pod.mkdir()
        resumed = _fake_run(server, store_url, *common, cwd=second_pod)
        out, _ = resumed.communicate(timeout=120)
        assert resumed.returncode == 0, out
        assert server.chat_requests - requests_before == 90 - rows_saved  # nothing redone that was saved
        clean = _fake_run(server, str(tmp_path / "clean"), *common)
        assert clean.wait(120) == 0
    tables = open_store(str(second_pod / "work")).child("kill-test") if cluster else store
    frame = read_table(tables, "exp1/fake-model_study1_raw_responses").drop(columns=VOLATILE)
    clean_table = tmp_path / "clean" / "kill-test" / "exp1" / "fake-model_study1_raw_responses.parquet"
    reference = pd.read_parquet(clean_table).drop(columns=VOLATILE)
    assert len(frame) == 90 and frame.row_index.is_unique
    pd.testing.assert_frame_equal(frame, reference)
    assert list(second_pod.iterdir()) == ([second_pod / "work"] if cluster else [])


def test_wrong_credentials_fail_before_any_model_call_and_never_print_the_key(s3, tmp_path):
    wrong_secret = "wrong-secret-DO-NOT-PRINT-7781"
    with FakeOpenAIServer() as server:
        run = _fake_run(server, _prefix(), env={**s3.env(), "AWS_SECRET_ACCESS_KEY": wrong_secret, "GRACE_STORE_ATTEMPTS": "2"})
        out, _ = run.communicate(timeout=120)
        assert server.chat_requests == 0 and server.completion_requests == 0
    assert run.returncode == 2, out
    assert "storage refused" in out and "AWS_SECRET_ACCESS_KEY" in out
    assert wrong_secret not in out and SECRET_KEY not in out and ACCESS_KEY not in out


def test_storage_errors_name_the_operation_and_hide_credentials(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDSECRETLOOKING")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t")

    class FakeFailingFS:  # FAKE pyarrow filesystem raising what pyarrow raises
        def __init__(self, message):
            self.message, self.calls = message, 0

        def open_output_stream(self, path):
            self.calls += 1
            raise OSError(self.message)

    down = FakeFailingFS("AWS Error NETWORK_CONNECTION during PutObject: curlCode: 7 (key AKIDSECRETLOOKING s3cr3t)")
    store = S3Store("b", "p", "http://127.0.0.1:9", attempts=3, backoff_s=0.01, _fs=down)
    with pytest.raises(StorageError) as caught:
        store.write_bytes("exp1/x.parquet", b"1")
    assert down.calls == 3 and "writing s3://b/p/exp1/x.parquet" in str(caught.value) and "failed 3 times" in str(caught.value)
    assert "s3cr3t" not in str(caught.value) and "AKIDSECRETLOOKING" not in str(caught.value)
    denied = FakeFailingFS("AWS Error ACCESS_DENIED during PutObject")
    with pytest.raises(StorageAccessError):
        S3Store("b", "p", None, attempts=3, backoff_s=0.01, _fs=denied).write_bytes("x", b"1")
    assert denied.calls == 1  # permanent: not retried


def test_endpoint_down_mid_run_fails_cleanly_then_resumes(tmp_path, monkeypatch):
    study = _big_study1(tmp_path, 20)  # 120 rows
    common = ["--studies", "1", "--study1", str(study), "--concurrency", "3", "--stages", "query", "--run-id", "outage"]
    with SeaweedS3(tmp_path / "seaweed") as s3_server, FakeOpenAIServer(latency_ms=40) as server:
        env = {**s3_server.env(), "GRACE_STORE_ATTEMPTS": "3"}
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        store = open_store("s3://grace/outage").child("outage")
        run = _fake_run(server, "s3://grace/outage", *common, env=env)
        assert _wait_for_segments(store, "checkpoints/exp1/fake-model_study1", 1, run)
        s3_server.stop()
        stopped = time.monotonic()
        out, _ = run.communicate(timeout=120)
        assert run.returncode == 6, out
        assert "storage unavailable" in out and "failed 3 times" in out and "re-run the same command" in out
        assert time.monotonic() - stopped < 60  # bounded retries, not a hang
        assert SECRET_KEY not in out

        s3_server.start()
        saved = sum(len(store.read_bytes(k).splitlines()) - 1 for k in store.list("checkpoints/exp1/fake-model_study1"))
        requests_before = server.chat_requests
        again = _fake_run(server, "s3://grace/outage", *common, env=env)
        out, _ = again.communicate(timeout=120)
        assert again.returncode == 0, out
        assert server.chat_requests - requests_before == 120 - saved
        frame = read_table(store, "exp1/fake-model_study1_raw_responses")
    assert len(frame) == 120 and frame.row_index.is_unique and (frame.status == "ok").all()
