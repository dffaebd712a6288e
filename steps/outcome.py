"""What every row-by-row step shares: resume from a checkpoint, run the rest in a sliding
window, report progress, and decide whether too many rows failed.

A step supplies its items, how to key them, when a checkpointed record counts as done,
and the async ``work`` for one item; :func:`run_resumable` does the rest and returns the
complete table (checkpointed and fresh records, in item order).
"""

from __future__ import annotations

import asyncio
import time
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterable, Optional, Protocol, TypeVar

import pandas as pd

from steps.checkpoint import AnyCheckpoint, Key
from steps.errors import StepFailedError
from steps.llm_client import completed_in_window

T = TypeVar("T")


class RowProgress(Protocol):
    """Receives a step's progress (the local runner shows it as a bar or log lines)."""

    def start(self, total: int, already_done: int) -> None:
        """A step of ``total`` rows starts; ``already_done`` of them were resumed from its checkpoint."""

    def advance(self, ok: bool) -> None:
        """One row finished; ``ok`` is False when it failed."""


class NoProgress:
    """Progress that goes nowhere (tests, library use)."""

    def start(self, total: int, already_done: int) -> None:
        """Ignore the start."""

    def advance(self, ok: bool) -> None:
        """Ignore the row."""


@dataclass
class StepOutcome:
    """What a step produced and how it went."""

    frame: pd.DataFrame
    done: int
    failed: int
    resumed: int
    wall_s: float
    completion_tokens: int
    status_column: str = "status"
    error_column: str = "error"

    @property
    def total(self) -> int:
        """Rows finished, failed or not (``done`` + ``failed``)."""
        return self.done + self.failed


def record_key(record: dict[str, Any]) -> tuple[int, int]:
    """The key every step's records share: (row_index, replication)."""
    return int(record["row_index"]), int(record.get("replication") or 0)


def compact(record: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint stores of ``record``: the fields that differ from ``base`` (what the step
    rebuilds from its inputs), always with the key."""
    return {k: v for k, v in record.items() if k in KEY_FIELDS or k not in base or base[k] != v}


KEY_FIELDS = ("row_index", "replication")


async def run_resumable(
    items: Iterable[T],
    item_key: Callable[[T], Key],
    is_done: Callable[[T, dict[str, Any]], bool],
    work: Callable[[T], Awaitable[dict[str, Any]]],
    window: int,
    checkpoint: AnyCheckpoint,
    progress: RowProgress = NoProgress(),
    status_column: str = "status",
    error_column: str = "error",
    count_tokens: bool = False,
    base: Optional[Callable[[T], dict[str, Any]]] = None,
) -> StepOutcome:
    """Run ``work`` for every item whose checkpointed record is not done; return the whole table.

    ``is_done(item, record)`` decides whether a checkpointed record still stands for ``item``.
    ``base(item)`` is the part of an item's record the step can rebuild (input columns,
    constant fields): the checkpoint stores only the rest (:func:`compact`), and loaded
    records are ``{**base(item), **stored}``. Finished records are committed in groups from a
    worker thread (see :mod:`steps.checkpoint` for the loss bound); every blocking call
    (loading, committing, building the table) runs off the event loop. A record is failed
    when its ``status_column`` is 'failed'; ``count_tokens`` sums fresh records' completion_tokens.
    """
    started = time.perf_counter()
    items = list(items)
    stored = await asyncio.to_thread(checkpoint.load)
    by_key = {item_key(item): item for item in items}
    finished = {key: ({**base(by_key[key]), **record} if base is not None and key in by_key else record)
                for key, record in stored.items()}
    todo = [item for item in items if not (item_key(item) in finished and is_done(item, finished[item_key(item)]))]
    progress.start(len(items), len(items) - len(todo))
    tokens = 0

    async def committer() -> None:  # commits when due: flush_s after the last commit, or flush_rows waiting
        while True:
            await asyncio.sleep(min(checkpoint.flush_s, 0.1))  # (not wait_for: on 3.11 it can swallow the cancel)
            if checkpoint.due():
                await asyncio.to_thread(checkpoint.flush)

    commits = asyncio.create_task(committer())
    try:
        async with aclosing(completed_in_window(todo, work, window)) as results:  # a failed commit cancels the rest
            async for record in results:
                if commits.done():
                    commits.result()  # the store failed (StorageError): stop here
                key = record_key(record)
                checkpoint.add(compact(record, base(by_key[key])) if base is not None else record)
                finished[key] = record
                tokens += (record.get("completion_tokens") or 0) if count_tokens else 0
                progress.advance(record.get(status_column) != "failed")
    finally:
        commits.cancel()  # a commit in progress finishes in its thread; the caller's checkpoint.close() commits the rest
        await asyncio.gather(commits, return_exceptions=True)
    await asyncio.to_thread(checkpoint.flush)
    frame = await asyncio.to_thread(pd.DataFrame, [finished[item_key(item)] for item in items])
    failed = int((frame[status_column] == "failed").sum()) if len(frame) else 0
    return StepOutcome(frame, len(frame) - failed, failed, len(items) - len(todo), time.perf_counter() - started, tokens,
                       status_column, error_column)


def enforce_failure_threshold(outcome: StepOutcome, max_failed_fraction: float, label: str) -> None:
    """Raise StepFailedError when more than ``max_failed_fraction`` of the rows failed.

    Call it after the step's outputs are saved: the finished rows are kept, and a
    re-run retries only the failed ones.
    """
    if not outcome.total or outcome.failed / outcome.total <= max_failed_fraction:
        return
    frame = outcome.frame
    reasons = frame.loc[frame[outcome.status_column] == "failed", outcome.error_column].value_counts().head(3)
    top = "; ".join(f"{n} x {reason}" for reason, n in reasons.items())
    raise StepFailedError(
        f"{label}: {outcome.failed} of {outcome.total} rows failed (more than the allowed "
        f"{max_failed_fraction:.0%}). Most common: {top}. Finished rows are saved; fix the cause "
        "and re-run the same command to retry only the failed rows."
    )
