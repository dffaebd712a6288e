"""One run per run id and node: a second run stops at once naming the holder; killed runs' locks are taken over."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.config import example_study_path
from steps.errors import RunLockedError
from steps.run_lock import RunLock
from steps.store import LocalStore, S3Store
from tests.conftest import read_rows, write_rows
from tests.fakes.fake_openai_server import FakeOpenAIServer

REPO = Path(__file__).resolve().parents[1]


def test_second_holder_is_refused_with_who_and_since_when(tmp_path):
    store = LocalStore(tmp_path)
    with RunLock(store, ["query-m-study1", "validate-study1"], what="first"):
        with pytest.raises(RunLockedError) as caught:
            RunLock(store, ["validate-study1"]).acquire()
        message = str(caught.value)
        assert f"(pid {os.getpid()}) since 20" in message and "validate-study1" in message and "--wait-for-lock" in message
        assert caught.value.exit_code == 7
        assert len(store.list("locks/validate-study1")) == 1  # the refused claim was removed
        RunLock(store, ["query-m-study2"]).acquire().release()  # another node of the same run is free
    assert store.list("locks") == []  # released
    RunLock(store, ["validate-study1"]).acquire().release()


def test_a_claim_of_a_dead_process_on_this_host_is_taken_over_at_once(tmp_path):
    store = LocalStore(tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    claim = {"user": "x", "host": os.uname().nodename, "pid": dead.pid, "pid_start": None, "since": "2026-01-01T00:00:00Z"}
    store.write_bytes("locks/query-m-study1/claim-dead.json", json.dumps(claim).encode())
    notes = []
    with RunLock(store, ["query-m-study1"], log=notes.append):
        assert any("taking over" in n and "has ended" in n for n in notes)


def test_a_claim_not_renewed_for_too_long_is_taken_over(tmp_path):
    store = LocalStore(tmp_path)
    claim = {"user": "x", "host": "another-pod", "pid": 1, "since": "2026-01-01T00:00:00Z"}
    store.write_bytes("locks/n/claim-old.json", json.dumps(claim).encode())
    with pytest.raises(RunLockedError, match="another-pod"):
        RunLock(store, ["n"], stale_after_s=60).acquire()
    old = time.time() - 120
    os.utime(store.local_path("locks/n/claim-old.json"), (old, old))
    with RunLock(store, ["n"], stale_after_s=60, log=lambda m: None):
        assert store.list("locks/n") and all("claim-old" not in k for k in store.list("locks/n"))


def test_the_holder_renews_its_claim(tmp_path):
    store = LocalStore(tmp_path)
    with RunLock(store, ["n"], heartbeat_s=0.05) as lock:
        (key,) = store.list("locks/n")
        first = json.loads(store.read_bytes(key))
        old = time.time() - 120
        os.utime(store.local_path(key), (old, old))
        time.sleep(0.3)
        assert store.modified(key) > old + 60  # rewritten
        assert lock.token in key and first["node"] == "n"


def test_waiting_for_the_holder(tmp_path):
    store = LocalStore(tmp_path)
    first = RunLock(store, ["n"]).acquire()
    started = time.monotonic()
    with pytest.raises(RunLockedError, match="waited 1 s"):
        RunLock(store, ["n"], wait_s=1.0, log=lambda m: None).acquire()
    assert time.monotonic() - started >= 1.0
    first.release()


def test_lock_in_s3(s3_env):
    store = S3Store("grace", "locktest")
    with RunLock(store, ["query-m-study1"]):
        with pytest.raises(RunLockedError, match="query-m-study1"):
            RunLock(store, ["query-m-study1"]).acquire()
    RunLock(store, ["query-m-study1"]).acquire().release()
    assert store.list("locks") == []


def _cli(*args):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_the_same_command_twice_second_stops_at_once_first_finishes(tmp_path, capsys):
    """Two runs on one store used to both exit 0, sending every request twice and mixing their checkpoints."""
    header, rows = read_rows(example_study_path(2))
    study = write_rows(tmp_path / "s2.csv", header, [[str(100 + c)] + r[1:] for c in range(10) for r in rows])  # 80 rows
    with FakeOpenAIServer() as server, FakeOpenAIServer() as other:  # the same model on two servers: the same run id
        server.hold_after = 2  # the first run cannot finish (or release its lock) before the second has been turned away
        args = ["--studies", "2", "--study2", str(study), "--concurrency", "2", "--stages", "query", "--output", str(tmp_path / "out")]
        first = _cli("--endpoint", f"fake-model={server.url}", *args)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and server.chat_requests < 3 and first.poll() is None:
            time.sleep(0.05)
        assert first.poll() is None and server.chat_requests >= 3  # running, and holding the lock
        assert main(["run", "--endpoint", f"fake-model={other.url}", *args]) == 7
        server.hold_after = None
        assert first.wait(120) == 0, first.stdout.read().decode()
        assert other.chat_requests == 0
    err = capsys.readouterr().err
    assert "query-fake-model-study2 of this run is held by" in err and "since" in err
    assert server.chat_requests == 80  # every request sent exactly once
