"""Checkpoints: durable appends, torn last lines, fingerprint mismatches, later wins."""

from __future__ import annotations

import json

import pytest

from steps.checkpoint import Checkpoint
from steps.errors import CheckpointMismatchError

FP = {"run_id": "r", "input_sha256": "abc"}


def test_records_survive_and_later_record_wins(tmp_path):
    path = tmp_path / "c.jsonl"
    with Checkpoint(path, FP) as cp:
        assert cp.load() == {}
        cp.append({"row_index": 0, "replication": 0, "status": "failed"})
        cp.append({"row_index": 1, "replication": 0, "status": "ok"})
        cp.append({"row_index": 0, "replication": 0, "status": "ok"})
    with Checkpoint(path, FP) as cp:
        loaded = cp.load()
    assert loaded[(0, 0)]["status"] == "ok" and len(loaded) == 2


def test_torn_last_line_is_dropped_and_file_stays_appendable(tmp_path):
    path = tmp_path / "c.jsonl"
    with Checkpoint(path, FP) as cp:
        cp.load()
        cp.append({"row_index": 0, "replication": 0, "status": "ok"})
    with open(path, "ab") as handle:
        handle.write(b'{"row_index": 1, "replica')  # killed mid-write
    with Checkpoint(path, FP) as cp:
        assert list(cp.load()) == [(0, 0)]
        cp.append({"row_index": 1, "replication": 0, "status": "ok"})
    lines = path.read_text().splitlines()
    assert [json.loads(line).get("row_index") for line in lines[1:]] == [0, 1]


def test_mismatched_fingerprint_is_refused_with_what_changed(tmp_path):
    path = tmp_path / "c.jsonl"
    with Checkpoint(path, FP) as cp:
        cp.load()
    with pytest.raises(CheckpointMismatchError, match="input_sha256"):
        Checkpoint(path, {**FP, "input_sha256": "other"}).load()
