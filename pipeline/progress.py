"""Progress on long work: live bars on a terminal, periodic log lines elsewhere (Argo logs, CI), and in an Argo
pod the rows done / total of the step in ``$ARGO_PROGRESS_FILE`` ("N/M"), which Argo shows on the node and the workflow."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Optional

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn

LOG_EVERY_S = 30.0
ARGO_PROGRESS_ENV = "ARGO_PROGRESS_FILE"
ARGO_PROGRESS_EVERY_S = 1.0  # Argo's executor reads the file every 3 s by default


class ProgressReporter:
    """Tracks rows done per node; the runner calls ``start`` and ``advance`` per node, inside ``with reporter:``."""

    def __init__(self, console: Console, live: Optional[bool] = None):
        self.console = console
        self.live = console.is_terminal if live is None else live
        self._bars: Optional[Progress] = None
        self._tasks: dict[str, TaskID] = {}
        self._state: dict[str, dict] = {}
        argo = os.environ.get(ARGO_PROGRESS_ENV)
        self._argo_file = Path(argo) if argo else None
        self._argo_written = 0.0

    def _report_to_argo(self, force: bool = False) -> None:
        """Write the step's rows done / total (every node of this process) for Argo, at most once a second."""
        if self._argo_file is None or (not force and time.monotonic() - self._argo_written < ARGO_PROGRESS_EVERY_S):
            return
        done = sum(s["done"] for s in self._state.values())
        total = sum(s["total"] for s in self._state.values())
        partial = self._argo_file.with_name(self._argo_file.name + ".partial")
        try:
            partial.write_text(f"{done}/{total}\n")
            partial.replace(self._argo_file)
        except OSError:
            self._argo_file = None  # progress is a courtesy: never fail a step over it
        self._argo_written = time.monotonic()

    def __enter__(self) -> "ProgressReporter":
        if self.live:
            self._bars = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("rows"),
                TextColumn("{task.fields[failed]} failed"), TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=self.console,
            )
            self._bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bars is not None:
            self._bars.stop()

    def start(self, node: str, total: int, already_done: int) -> None:
        """Begin ``node``: ``total`` rows, ``already_done`` of them resumed from its checkpoint (a bar, or a log line)."""
        self._state[node] = dict(total=total, done=already_done, failed=0, started=time.monotonic(), fresh=0, logged=0.0)
        self._report_to_argo(force=True)
        if self._bars is not None:
            self._tasks[node] = self._bars.add_task(node, total=total, completed=already_done, failed=0, rate="")
        elif already_done:
            self.console.print(f"{node}: resuming, {already_done} of {total} rows already done")

    def advance(self, node: str, ok: bool) -> None:
        """One more row of ``node`` finished (``ok`` False: it failed); updates the bar, or logs now and then."""
        state = self._state[node]
        state["done"] += 1
        state["fresh"] += 1
        state["failed"] += 0 if ok else 1
        self._report_to_argo(force=state["done"] == state["total"])
        elapsed = max(1e-9, time.monotonic() - state["started"])
        rate = state["fresh"] / elapsed
        if self._bars is not None:
            self._bars.update(self._tasks[node], advance=1, failed=state["failed"], rate=f"{rate:.2f} rows/s")
        elif state["done"] == state["total"] or time.monotonic() - state["logged"] >= LOG_EVERY_S:
            state["logged"] = time.monotonic()
            left = state["total"] - state["done"]
            eta = f", ETA {left / rate:.0f} s" if rate > 0 and left else ""
            self.console.print(f"{node}: {state['done']}/{state['total']} rows ({state['failed']} failed), {rate:.2f} rows/s{eta}")
