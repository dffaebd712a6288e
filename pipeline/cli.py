"""``grace-pipeline``: run the pipeline on this machine, validate inputs, inspect the plan, run it on Argo.

Exit codes: :data:`steps.errors.EXIT_CODES` (printed by ``grace-pipeline --help``, and the
README's table); every error a user can see is a :class:`~steps.errors.GraceError` carrying
its code.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Optional, Sequence

from rich.console import Console
from rich.table import Table

from pipeline import __version__
from pipeline.cli_options import (
    add_input_options,
    add_registry_option,
    add_run_options,
    config_from_args,
    csv_list,
    human_paths,
    study_paths,
)
from pipeline.cluster.cluster_cli import add_cluster_commands, run_cluster_command
from pipeline.config import STAGES, RunConfig
from pipeline.model_server.embedded import start_embedded
from pipeline.plan import build_plan, plan_as_dicts
from pipeline.progress import ProgressReporter
from pipeline.registry import EMBEDDED_DEFAULT, load_registry
from pipeline.run_setup import load_run_inputs
from pipeline.runner.local import run_local
from pipeline.runner.summary import print_summary
from steps.errors import EXIT_CODES, EXIT_INTERRUPTED, GraceError
from steps.studies import available_studies


def exit_code_help() -> str:
    """The exit-code table as plain text (the --help epilog)."""
    return "exit codes:\n" + "\n".join(f"  {code:>3}  {meaning.replace('`', '')}" for code, meaning in EXIT_CODES.items())


def build_parser() -> argparse.ArgumentParser:
    """The ``grace-pipeline`` argument parser with every subcommand and its options."""
    parser = argparse.ArgumentParser(prog="grace-pipeline", description=__doc__.split("\n\n")[0], epilog=exit_code_help(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"grace-pipeline {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="Run the pipeline on this machine (embedded model server by default)",
                         description="Validate the study files, start (or reach) the model servers, run Experiment 1 "
                                     "(query), structured extraction (extract) and Experiment 2 (probabilities) for every model x study, "
                                     "and write one table per stage x model x study. Re-running the same command resumes: "
                                     "finished rows are not redone.")
    add_run_options(run)

    validate = sub.add_parser("validate", help="Check study files without calling any model")
    add_input_options(validate)

    models = sub.add_parser("models", help="List the model registry (with --registry FILE: merged with yours)")
    add_registry_option(models)

    plan = sub.add_parser("plan", help="Print the DAG (nodes and dependencies) as JSON")
    plan.add_argument("--models", default=EMBEDDED_DEFAULT)
    plan.add_argument("--studies", default=",".join(map(str, available_studies())))
    plan.add_argument("--stages", default=",".join(STAGES))
    add_cluster_commands(sub)
    return parser


def _cmd_run(args: argparse.Namespace, console: Console) -> int:
    started = time.perf_counter()
    config = config_from_args(args)
    err = Console(stderr=True)
    result = asyncio.run(run_local(config, ProgressReporter(err), started, start_embedded))
    print_summary(console, result)
    return result.exit_code


def _cmd_validate(args: argparse.Namespace, console: Console) -> int:
    studies = study_paths(args)
    config = RunConfig(studies=studies, human=human_paths(args, studies), models=(EMBEDDED_DEFAULT,), row_limit=args.limit,
                       encoding=args.encoding)
    inputs, human = load_run_inputs(config)
    for number, (spec, table) in inputs.items():
        console.print(f"study {number} ({spec.name}): {table.path}: {len(table.frame)} rows OK")
        for warning in table.warnings:
            console.print(f"  warning: {warning}")
    for number, data in human.items():
        console.print(f"human data for study {number}: {data.path}: {len(data.frame)} trials from {data.participants} participants OK")
        for warning in data.warnings:
            console.print(f"  warning: {warning}")
    return 0


def _cmd_models(args: argparse.Namespace, console: Console) -> int:
    title = "Model registry (pipeline/models.yaml" + (f" + {args.registry})" if args.registry else ")")
    table = Table(title=title)
    for column in ("name", "hf_id", "engine", "dtype", "tp", "gpus", "max_len", "notes"):
        table.add_column(column)
    for m in load_registry(args.registry).values():
        notes = ("reasoning; " if m.reasoning else "") + ("gated (HF_TOKEN); " if m.gated else "") + m.notes
        table.add_row(m.name, m.hf_id, m.engine, m.dtype, str(m.tensor_parallel_size), str(m.gpus), str(m.max_model_len), notes)
    console.print(table)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command in ``argv`` (default: the process arguments); returns the exit code (steps/errors.py)."""
    args = build_parser().parse_args(argv)
    console = Console() if sys.stdout.isatty() else Console(width=160)  # logs: do not truncate the summary
    try:
        if args.command == "run":
            return _cmd_run(args, console)
        if args.command == "validate":
            return _cmd_validate(args, console)
        if args.command == "models":
            return _cmd_models(args, console)
        cluster = run_cluster_command(args, console, start_embedded)
        if cluster is not None:
            return cluster
        nodes = build_plan(csv_list(args.models, "models"), [int(s) for s in csv_list(args.studies, "studies")],
                           csv_list(args.stages, "stages"))
        print(json.dumps(plan_as_dicts(nodes), indent=2))
        return 0
    except GraceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted: finished rows are saved; run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
