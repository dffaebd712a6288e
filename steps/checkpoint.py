"""Durable, append-only checkpoints of finished rows (JSON Lines).

Line 1 is a header with the step's fingerprint (inputs, template, model, sampling);
every further line is one finished record, keyed by ``(row_index, replication)``.
Each append is flushed and fsync'ed before the next row is counted, so a SIGKILL
loses at most the rows in flight. A torn last line (the process died mid-write) is
dropped on load. When a key appears twice, the later record wins (a retried row).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from steps.errors import CheckpointMismatchError

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
            lines = complete.decode("utf-8").splitlines()
            if lines:
                header = json.loads(lines[0]).get("checkpoint")
                if header != self.fingerprint:
                    changed = sorted(k for k in set(header or {}) | set(self.fingerprint) if (header or {}).get(k) != self.fingerprint.get(k))
                    raise CheckpointMismatchError(
                        f"{self.path}: this checkpoint was written with different {', '.join(changed)}. "
                        "Use another --run-id (or output folder) for the new settings, or delete the checkpoint to start over."
                    )
                for line in lines[1:]:
                    record = json.loads(line)
                    records[(record["row_index"], record["replication"])] = record
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
