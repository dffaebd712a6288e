"""Durable checkpoints of finished rows (JSON Lines), in a local folder or an object store.

Line 1 is a header with the step's fingerprint (inputs, template, model, sampling);
every further line is one finished record, keyed by ``(row_index, replication)``.
When a key appears twice, the later record wins (a retried row).

- Local folder (:class:`Checkpoint`): one ``KEY.jsonl`` file; each append is flushed and
  fsync'ed before the next row is counted, so a SIGKILL loses at most the rows in
  flight. A torn last line (the process died mid-write) is dropped on load.
- Object store (:class:`ObjectCheckpoint`, e.g. S3, where objects cannot be appended
  to): finished rows are written as numbered segment objects ``KEY/part-NNNNNN-ID.jsonl``,
  each with the header, every ``flush_rows`` rows or ``flush_s`` seconds and when the
  step ends. A killed pod loses at most the rows of the last unflushed segment (they are
  redone, never duplicated). Loading compacts the segments into one.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any, Optional

from steps.errors import CheckpointMismatchError, StorageError
from steps.store import Store

Key = tuple[int, int]


class Checkpoint:
    """The checkpoint file of one step (one model x study x stage)."""

    def __init__(self, path: Path, fingerprint: dict[str, Any]):
        self.path = Path(path)
        self.fingerprint = fingerprint
        self._handle = None

    def load(self) -> dict[Key, dict[str, Any]]:
        """Records already finished, by key; creates the file (with its header) if absent.

        Raises CheckpointMismatchError if the file was written for another fingerprint.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        records: dict[Key, dict[str, Any]] = {}
        if self.path.exists():
            data = self.path.read_bytes()
            complete = data[: data.rfind(b"\n") + 1]
            if len(complete) != len(data):
                with open(self.path, "r+b") as handle:  # drop a torn last line
                    handle.truncate(len(complete))
            records = _parse(complete, self.fingerprint, str(self.path))
        if not self.path.exists() or self.path.stat().st_size == 0:
            self._write_line({"checkpoint": self.fingerprint})
        return records

    def append(self, record: dict[str, Any]) -> None:
        """Durably add one finished record."""
        self._write_line(record)

    def _write_line(self, obj: dict[str, Any]) -> None:
        if self._handle is None:
            self._handle = open(self.path, "ab")
        self._handle.write(json.dumps(obj, ensure_ascii=False, default=str).encode("utf-8") + b"\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> "Checkpoint":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _parse(data: bytes, fingerprint: dict[str, Any], where: str) -> dict[Key, dict[str, Any]]:
    """Records of one JSONL checkpoint body; raise CheckpointMismatchError if its header differs."""
    lines = data.decode("utf-8").splitlines()
    if not lines:
        return {}
    header = json.loads(lines[0]).get("checkpoint")
    if header != fingerprint:
        changed = sorted(k for k in set(header or {}) | set(fingerprint) if (header or {}).get(k) != fingerprint.get(k))
        raise CheckpointMismatchError(
            f"{where}: this checkpoint was written with different {', '.join(changed)}. "
            "Use another --run-id (or store) for the new settings, or delete the checkpoint to start over."
        )
    records = {}
    for line in lines[1:]:
        record = json.loads(line)
        records[(record["row_index"], record["replication"])] = record
    return records


def _jsonl(fingerprint: dict[str, Any], records) -> bytes:
    lines = [{"checkpoint": fingerprint}, *records]
    return b"".join(json.dumps(obj, ensure_ascii=False, default=str).encode("utf-8") + b"\n" for obj in lines)


class ObjectCheckpoint:
    """The checkpoint of one step in an object store: segment objects below ``key`` (see the module docstring)."""

    def __init__(self, store: Store, key: str, fingerprint: dict[str, Any], flush_rows: int = 20, flush_s: float = 5.0):
        self.store, self.key, self.fingerprint = store, key, fingerprint
        self.flush_rows, self.flush_s = flush_rows, flush_s
        self._pending: list[dict[str, Any]] = []
        self._last_flush = time.monotonic()
        self._next_seq = 1

    def _segment_key(self, seq: int) -> str:
        return f"{self.key}/part-{seq:06d}-{uuid.uuid4().hex[:8]}.jsonl"

    def load(self) -> dict[Key, dict[str, Any]]:
        """Records already finished, by key, from every segment in order; compacts several segments into one."""
        segments = [k for k in self.store.list(self.key) if k.rsplit("/", 1)[-1].startswith("part-")]
        records: dict[Key, dict[str, Any]] = {}
        for segment in segments:  # sorted: part-000001-... before part-000002-...
            records.update(_parse(self.store.read_bytes(segment) or b"", self.fingerprint, self.store.uri(segment)))
        if segments:
            self._next_seq = int(segments[-1].rsplit("/", 1)[-1].split("-")[1]) + 1
        if len(segments) > 1:  # write the union first, then drop the parts it replaces
            self.store.write_bytes(self._segment_key(self._next_seq), _jsonl(self.fingerprint, records.values()))
            self._next_seq += 1
            for segment in segments:
                self.store.delete(segment)
        return records

    def append(self, record: dict[str, Any]) -> None:
        """Add one finished record; it is written with the next segment."""
        self._pending.append(record)
        if len(self._pending) >= self.flush_rows or time.monotonic() - self._last_flush >= self.flush_s:
            self.flush()

    def flush(self) -> None:
        """Write the pending records as one segment (StorageError if the store does not answer)."""
        if self._pending:
            self.store.write_bytes(self._segment_key(self._next_seq), _jsonl(self.fingerprint, self._pending))
            self._next_seq += 1
            self._pending = []
        self._last_flush = time.monotonic()

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> "ObjectCheckpoint":
        return self

    def __exit__(self, exc_type, *exc: object) -> None:
        if exc_type is None or not issubclass(exc_type, StorageError):  # the store is down: do not wait for it twice
            self.close()


def open_checkpoint(store: Store, key: str, fingerprint: dict[str, Any]) -> "Checkpoint | ObjectCheckpoint":
    """The checkpoint of one step at ``key`` (no extension): a JSONL file locally, segments in an object store."""
    path: Optional[Path] = store.local_path(key + ".jsonl")
    return Checkpoint(path, fingerprint) if path is not None else ObjectCheckpoint(store, key, fingerprint)
