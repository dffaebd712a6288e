"""What finished and what failed, per model node, so that validation, merge and report can run on the models that
finished and name the ones that did not, and why (on one machine and on the cluster alike).

Every model x study node (query, probabilities, extract) leaves a status record in the run's durable store
(``status/<node>.json``, :func:`pipeline.layout.node_status_key`) when it ends: done, failed (with its exit code and
error) or skipped (a stage it needs failed). A step that fails before its nodes start (a vLLM server that never became
healthy, an unreachable extractor) records that error for each of its nodes. A pod that is killed, evicted or never
scheduled records nothing: such a model is reported as missing, with where to look. A retry that succeeds overwrites
the record. Records hold messages the steps print anyway (no secret is ever part of an error message).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Iterable, Optional

from pipeline.layout import SUMMARY_KEY, node_status_key
from pipeline.plan import Node
from steps.store import Store

NO_RECORD = ("no table and no record of an error: its step was killed, evicted, timed out while Pending or never ran "
             "(`grace-pipeline status <workflow>` shows the node and why)")


def write_node_status(store: Store, node: Node, state: str, exit_code: int = 0, error: Optional[str] = None, done: int = 0,
                      failed: int = 0) -> None:
    """Record how model node ``node`` ended (``state``: done, failed or skipped)."""
    record = {"node": node.name, "stage": node.stage, "model": node.model, "study": node.study, "state": state,
              "exit_code": exit_code, "error": error, "rows_done": done, "rows_failed": failed,
              "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    store.write_bytes(node_status_key(node.name), json.dumps(record, indent=1).encode("utf-8"))


def record_setup_failure(store: Store, nodes: Iterable[Node], error: Exception, exit_code: int, keep_done: bool = False) -> None:
    """A step failed before its nodes ran (or its server died under them): record ``error`` as the end of each of its model
    nodes (``keep_done``: except those already recorded done)."""
    for node in nodes:
        if node.model is None:
            continue
        if keep_done and (existing := store.read_bytes(node_status_key(node.name))) and json.loads(existing).get("state") == "done":
            continue
        write_node_status(store, node, "failed", exit_code, str(error))


def read_node_statuses(store: Store, nodes: Iterable[Node]) -> dict[str, dict]:
    """Node name -> its last record, for the nodes that left one."""
    found = {}
    for node in nodes:
        data = store.read_bytes(node_status_key(node.name))
        if data is not None:
            found[node.name] = json.loads(data)
    return found


def run_outcome(store: Store, nodes: list[Node], finished: dict[int, set[str]]) -> dict:
    """The run's outcome over its model ``nodes``: ``finished`` is study -> models whose tables made it into the study's
    analysis table (a study without one is listed in ``studies_without_analysis``: its merge failed or did not run).
    Returns {"complete": {study: [models]}, "failed": [records of failed nodes], "missing": [{model, study, reason}],
    "studies_without_analysis": [studies]}."""
    records = read_node_statuses(store, nodes)
    failed = [r for r in records.values() if r["state"] == "failed"]
    missing = []
    for model, study in sorted({(n.model, n.study) for n in nodes if n.model is not None and n.study is not None}):
        if study not in finished or model in finished[study]:
            continue
        if not any(r["model"] == model and r["study"] == study for r in failed):
            missing.append({"model": model, "study": study, "reason": NO_RECORD})
    studies = sorted({n.study for n in nodes if n.study is not None} - set(finished))
    return {"complete": {str(s): sorted(m) for s, m in sorted(finished.items())}, "failed": failed, "missing": missing,
            "studies_without_analysis": studies}


def outcome_lines(outcome: dict) -> list[str]:
    """One line per failed node and per missing model x study (empty when everything finished)."""
    lines = [f"{r['stage']} of {r['model']}, study {r['study']}: failed (exit {r['exit_code']}): {r['error']}" for r in outcome["failed"]]
    lines += [f"{m['model']}, study {m['study']}: {m['reason']}" for m in outcome["missing"]]
    lines += [f"study {s}: no analysis table (its merge failed or did not run)" for s in outcome["studies_without_analysis"]]
    return lines


def write_summary(store: Store, outcome: dict) -> str:
    """Write ``run_summary.json`` (the outcome) into the run's store; return its URI."""
    store.write_bytes(SUMMARY_KEY, json.dumps(outcome, indent=2, ensure_ascii=False).encode("utf-8"))
    return store.uri(SUMMARY_KEY)
