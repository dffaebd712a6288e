"""Exclusive hold of a run's stage nodes, in a local folder or in S3 alike.

Two processes working on the same run id and node would send every request twice and
interleave their checkpoints, so a run holds each node it runs (``query-<model>-study1``,
``validate-study1``, ...) for its whole duration:

* To take node N, a run writes its own claim object ``locks/N/claim-<token>.json`` (who:
  user, host, pid; since when) and then lists ``locks/N/``. It holds N only when its claim
  is the only live one; otherwise it deletes its claim and raises :class:`RunLockedError`
  naming the holder and since when. On any store where a listing made after a write shows
  that write (a local folder; AWS S3 and S3-compatible servers with strong consistency), of
  two contenders at least one sees the other, so two runs never both hold N (at worst two
  runs starting in the same instant both refuse; re-run one of them).
* Liveness: the holder rewrites its claims every :data:`HEARTBEAT_S` seconds from a
  background thread. A claim is stale, and is taken over (deleted, with a note), when its
  process is gone on this same host (a killed local run: at once), or when it was last
  written more than :data:`STALE_AFTER_S` seconds before the new contender's claim, by the
  store's own clock (a killed pod on another machine).
* ``wait_s`` > 0 keeps trying (every :data:`POLL_S` seconds) until the holder finishes.

Claims are released when the run ends, also on errors and Ctrl-C.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Callable, Optional

from steps.errors import RunLockedError, StorageError
from steps.store import Store

HEARTBEAT_S = 10.0
STALE_AFTER_S = 60.0
POLL_S = 2.0
LOCK_FOLDER = "locks"


def _process_start(pid: int) -> Optional[str]:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid apart; None elsewhere."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return None


def _alive(pid: int, started: Optional[str]) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return started is None or _process_start(pid) in (None, started)


def _whoami() -> dict[str, Any]:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "?"
    return {"user": user, "host": socket.gethostname(), "pid": os.getpid(), "pid_start": _process_start(os.getpid())}


def describe_claim(claim: dict[str, Any]) -> str:
    """'user@host (pid N) since 2026-11-25T22:31:04Z' for messages."""
    return f"{claim.get('user', '?')}@{claim.get('host', '?')} (pid {claim.get('pid', '?')}) since {claim.get('since', '?')}"


class RunLock:
    """Claims on a set of nodes of one run (see the module docstring). Use as a context manager."""

    def __init__(self, store: Store, nodes: list[str], wait_s: float = 0.0, what: str = "",
                 log: Callable[[str], None] = lambda message: print(message, flush=True),
                 heartbeat_s: float = HEARTBEAT_S, stale_after_s: float = STALE_AFTER_S):
        self.store, self.nodes, self.wait_s, self.what = store, list(nodes), wait_s, what
        self.log, self.heartbeat_s, self.stale_after_s = log, heartbeat_s, stale_after_s
        self.token = uuid.uuid4().hex[:16]
        self.me = _whoami() | {"since": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "command": what}
        self._held: list[str] = []
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def _key(self, node: str) -> str:
        return f"{LOCK_FOLDER}/{node}/claim-{self.token}.json"

    def _write(self, node: str) -> None:
        body = self.me | {"node": node, "heartbeat": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        self.store.write_bytes(self._key(node), json.dumps(body).encode("utf-8"))

    def _stale(self, claim: dict[str, Any], age_s: Optional[float]) -> Optional[str]:
        """Why ``claim`` is stale (for the note), or None when its holder may still be working."""
        if claim.get("host") == self.me["host"] and isinstance(claim.get("pid"), int) and claim["pid"] != os.getpid():
            if not _alive(claim["pid"], claim.get("pid_start")):
                return f"its process {claim['pid']} on this host has ended"
        if age_s is not None and age_s > self.stale_after_s:
            return f"it was last renewed {age_s:.0f} s ago (more than {self.stale_after_s:.0f} s)"
        return None

    def _try(self, node: str) -> Optional[dict[str, Any]]:
        """Take ``node``: None when held, else the live claim that holds it."""
        mine = self._key(node)
        self._write(node)
        my_time = self.store.modified(mine)
        holder = None
        for key in self.store.list(f"{LOCK_FOLDER}/{node}"):
            if key == mine or not key.rsplit("/", 1)[-1].startswith("claim-"):
                continue
            raw = self.store.read_bytes(key)
            if raw is None:  # released meanwhile
                continue
            try:
                claim = json.loads(raw)
            except ValueError:
                claim = {}
            written = self.store.modified(key)
            age = my_time - written if my_time is not None and written is not None else None
            why = self._stale(claim, age)
            if why is not None:
                self.log(f"taking over the lock of {node} held by {describe_claim(claim)}: {why}")
                self.store.delete(key)
                continue
            holder = claim or {"host": "?", "since": "?"}
        if holder is not None:
            self.store.delete(mine)
        return holder

    def acquire(self) -> "RunLock":
        """Hold every node or none: RunLockedError naming the holder (after ``wait_s`` seconds of trying)."""
        deadline = time.monotonic() + self.wait_s
        waited = False
        for node in self.nodes:
            while True:
                holder = self._try(node)
                if holder is None:
                    self._held.append(node)
                    break
                if time.monotonic() >= deadline:
                    self.release()
                    wait_note = f" (waited {self.wait_s:.0f} s)" if self.wait_s else ""
                    raise RunLockedError(
                        f"{self.store.uri()}: node {node} of this run is held by {describe_claim(holder)}"
                        f"{': ' + holder['command'] if holder.get('command') else ''}{wait_note}. Two runs of the same run id "
                        "would send every request twice: wait for it to finish (or pass --wait-for-lock SECONDS), or use "
                        "another --run-id / store. A killed run's lock is taken over automatically "
                        f"(on another machine after {self.stale_after_s:.0f} s).")
                if not waited:
                    self.log(f"waiting for node {node}, held by {describe_claim(holder)}")
                    waited = True
                time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))
        self._thread = threading.Thread(target=self._heartbeat, name="run-lock-heartbeat", daemon=True)
        self._thread.start()
        return self

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            for node in list(self._held):
                try:
                    self._write(node)
                except StorageError as exc:  # the next beat tries again; a store that stays down fails the run anyway
                    self.log(f"could not renew the lock of {node}: {exc}")

    def release(self) -> None:
        """Stop renewing and delete this run's claims (best effort: a claim left behind goes stale)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        for node in self._held:
            try:
                self.store.delete(self._key(node))
            except StorageError:
                pass
        self._held = []

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
