"""The end-of-run summary printed by ``grace-pipeline run`` and the cluster's ``serve`` step."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from pipeline.plan import PARTIAL_STAGES
from pipeline.runner.local import RunResult


def print_summary(console: Console, result: RunResult) -> None:
    """Rows done/failed per model x study, time and tokens/s, then where the outputs are."""
    table = Table(title=f"Run {result.run_id}")
    table.add_column("stage")
    table.add_column("model")
    table.add_column("study")
    for column in ("ok", "failed", "resumed", "time", "tokens/s"):
        table.add_column(column, justify="right")
    for r in result.results:
        rate = f"{r.completion_tokens / r.wall_s:.1f}" if r.completion_tokens and r.wall_s else "-"
        table.add_row(r.node.stage, str(r.node.model or "all"), str(r.node.study or "all"), str(r.done), str(r.failed), str(r.resumed),
                      f"{r.wall_s:.1f} s", rate)
    console.print(table)
    print(f"Outputs of {result.run_id} ({result.wall_s:.1f} s): {result.run_uri}")
    for r in result.results:
        for path in r.outputs:
            print(f"  {path}")
    reports = [p for r in result.results if r.node.stage == "report" and r.error is None for p in r.outputs if p.endswith(".html")]
    for report in reports:
        print(f"Quality report: {Path(report).as_uri() if result.run_path else report}")
    for error in result.errors:
        print(f"error: {error}")
    not_finished = sorted({str(r.node.model) for r in result.results if r.node.model and r.error is not None})
    partial = [r for r in result.results if r.node.stage in PARTIAL_STAGES and r.error is None]
    if not_finished and partial:
        print(f"Partial results: {', '.join(sorted({r.node.stage for r in partial}))} covered the models that finished; not finished: "
              f"{', '.join(not_finished)} (why: the errors above, and run_summary.json in the run's folder when the report ran)")
