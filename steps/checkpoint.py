"""Durable checkpoints of finished rows (JSON Lines), in a local folder or an object store.

Line 1 is a header with the step's fingerprint (inputs, template, model, sampling);
every further line is one finished record, keyed by ``(row_index, replication)``.
When a key appears twice, the later record wins (a retried row). Records are compact:
the step leaves out what it can rebuild from its inputs (the input row's columns and
the step's constant fields, see :func:`steps.outcome.run_resumable`), so a checkpoint
holds little more than the answers themselves.

Group commit: finished rows are buffered and written together, with one fsync, at
most every ``flush_s`` seconds (or every ``flush_rows`` rows), from a worker thread off
the event loop, and when the step ends or is interrupted. The documented loss bound:
a process killed with SIGKILL (or a crashed machine) loses the rows in flight plus at
most the rows that finished in the last ``flush_s`` seconds; they are redone (never
duplicated) on the re-run.

- Local folder (:class:`Checkpoint`): one ``KEY.jsonl`` file, appended to; ``flush_s``
  0.1 s. A torn last line (the process died mid-write) is dropped on load.
- Object store (:class:`ObjectCheckpoint`, e.g. S3, where objects cannot be appended
  to): each commit is one numbered segment object ``KEY/part-NNNNNN-ID.jsonl`` with the
  header; ``flush_s`` 2 s, ``flush_rows`` 20 (one upload at a time: at high throughput a
  segment carries whatever finished during the previous upload). Loading compacts the
  segments into one.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any, BinaryIO, Optional, Union

from steps.errors import CheckpointMismatchError, StorageError
from steps.store import Store, local_storage_error

Key = tuple[int, int]


LOCAL_FLUSH_S = 0.1
OBJECT_FLUSH_S = 2.0
OBJECT_FLUSH_ROWS = 20


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False, default=str, separators=(",", ":")).encode("utf-8") + b"\n"


class _GroupCommit:
    """Buffer finished records; :meth:`flush` writes them as one commit (see the module docstring).

    :meth:`add` and :meth:`due` are cheap and meant for the event loop; :meth:`flush` does
    the I/O and is meant for a worker thread (one at a time). :meth:`append` is add +
    flush-when-due, for synchronous callers.
    """

    def __init__(self, flush_rows: int, flush_s: float):
        self.flush_rows, self.flush_s = flush_rows, flush_s
        self._pending: list[dict[str, Any]] = []
        self._last_flush = time.monotonic()
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()

    def add(self, record: dict[str, Any]) -> None:
        """Buffer one finished record (written with the next commit)."""
        with self._lock:
            self._pending.append(record)

    def due(self) -> bool:
        """Whether buffered records wait longer than ``flush_s`` or number ``flush_rows``."""
        return bool(self._pending) and (len(self._pending) >= self.flush_rows or time.monotonic() - self._last_flush >= self.flush_s)

    def flush(self) -> None:
        """Write every buffered record as one commit (StorageError if the store fails; the records stay buffered)."""
        with self._flush_lock:
            with self._lock:
                batch, self._pending = self._pending, []
            self._last_flush = time.monotonic()
            if not batch:
                return
            try:
                self._commit(batch)
            except BaseException:
                with self._lock:
                    self._pending = batch + self._pending
                raise

    def append(self, record: dict[str, Any]) -> None:
        """Add one finished record and commit when due (synchronous use)."""
        self.add(record)
        if self.due():
            self.flush()

    def _commit(self, batch: list[dict[str, Any]]) -> None:
        raise NotImplementedError


class Checkpoint(_GroupCommit):
    """The checkpoint file of one step (one model x study x stage) in a local folder."""

    def __init__(self, path: Path, fingerprint: dict[str, Any], flush_rows: int = 10_000, flush_s: float = LOCAL_FLUSH_S):
        super().__init__(flush_rows, flush_s)
        self.path = Path(path)
        self.fingerprint = fingerprint
        self._handle: Optional[BinaryIO] = None

    def load(self) -> dict[Key, dict[str, Any]]:
        """Records already finished, by key; creates the file (with its header) if absent.

        Raises CheckpointMismatchError if the file was written for another fingerprint,
        StorageError if it cannot be read or created.
        """
        try:
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
                self._write(_line({"checkpoint": self.fingerprint}))
        except OSError as exc:
            raise _storage_error("opening", self.path, exc) from None
        return records

    def check(self) -> None:
        """Raise CheckpointMismatchError if an existing file was written for another fingerprint (reads the header only)."""
        try:
            with open(self.path, "rb") as handle:
                first = handle.readline()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise _storage_error("reading", self.path, exc) from None
        if first.endswith(b"\n"):
            _parse(first, self.fingerprint, str(self.path))

    def _commit(self, batch: list[dict[str, Any]]) -> None:
        try:
            self._write(b"".join(_line(record) for record in batch))
        except OSError as exc:
            raise _storage_error("appending to", self.path, exc) from None

    def _write(self, data: bytes) -> None:
        if self._handle is None:
            self._handle = open(self.path, "ab")
        try:
            self._handle.write(data)
            self._handle.flush()
            os.fsync(self._handle.fileno())
        except OSError:
            # a partial write (full disk) leaves a torn line: drop the handle so the next load truncates it
            self._handle.close()
            self._handle = None
            raise

    def close(self) -> None:
        """Commit what is buffered and close the file."""
        try:
            self.flush()
        finally:
            if self._handle is not None:
                self._handle.close()
                self._handle = None

    def __enter__(self) -> "Checkpoint":
        return self

    def __exit__(self, exc_type, *exc: object) -> None:
        if exc_type is not None and issubclass(exc_type, StorageError):  # the disk failed: do not try again on the way out
            if self._handle is not None:
                self._handle.close()
                self._handle = None
            return
        self.close()


def _storage_error(what: str, path: Path, exc: OSError) -> StorageError:
    return local_storage_error(what + " the checkpoint", path, exc)


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
    return b"".join(_line(obj) for obj in [{"checkpoint": fingerprint}, *records])


class ObjectCheckpoint(_GroupCommit):
    """The checkpoint of one step in an object store: segment objects below ``key`` (see the module docstring)."""

    def __init__(self, store: Store, key: str, fingerprint: dict[str, Any], flush_rows: int = OBJECT_FLUSH_ROWS,
                 flush_s: float = OBJECT_FLUSH_S):
        super().__init__(flush_rows, flush_s)
        self.store, self.key, self.fingerprint = store, key, fingerprint
        self._next_seq = 1

    def _segment_key(self, seq: int) -> str:
        return f"{self.key}/part-{seq:06d}-{uuid.uuid4().hex[:8]}.jsonl"

    def _segments(self) -> list[str]:
        return [k for k in self.store.list(self.key) if k.rsplit("/", 1)[-1].startswith("part-")]

    def load(self) -> dict[Key, dict[str, Any]]:
        """Records already finished, by key, from every segment in order; compacts several segments into one."""
        segments = self._segments()
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

    def check(self) -> None:
        """Raise CheckpointMismatchError if existing segments were written for another fingerprint."""
        segments = self._segments()
        if segments:
            data = self.store.read_bytes(segments[0]) or b""
            _parse(data[: data.find(b"\n") + 1], self.fingerprint, self.store.uri(segments[0]))

    def _commit(self, batch: list[dict[str, Any]]) -> None:
        self.store.write_bytes(self._segment_key(self._next_seq), _jsonl(self.fingerprint, batch))
        self._next_seq += 1

    def close(self) -> None:
        """Commit what is buffered."""
        self.flush()

    def __enter__(self) -> "ObjectCheckpoint":
        return self

    def __exit__(self, exc_type, *exc: object) -> None:
        if exc_type is None or not issubclass(exc_type, StorageError):  # the store is down: do not wait for it twice
            self.close()


AnyCheckpoint = Union[Checkpoint, ObjectCheckpoint]


def open_checkpoint(store: Store, key: str, fingerprint: dict[str, Any]) -> AnyCheckpoint:
    """The checkpoint of one step at ``key`` (no extension): a JSONL file locally, segments in an object store."""
    path: Optional[Path] = store.local_path(key + ".jsonl")
    return Checkpoint(path, fingerprint) if path is not None else ObjectCheckpoint(store, key, fingerprint)
