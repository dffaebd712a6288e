"""``grace-pipeline``: run the pipeline on this machine, validate inputs, inspect the plan.

Exit codes: 0 success; 1 unexpected error; 2 bad input or options (nothing was sent
to a model); 3 too many rows failed in a step (finished rows are saved: re-run to
retry only the failed ones); 4 a model server could not be started or reached;
5 validation found broken outputs (the analysis table is still written); 6 the artifact
store could not be reached (finished rows are in the checkpoint: re-run to resume);
130 interrupted (finished rows are saved: re-run to resume).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from pipeline import __version__
from pipeline.config import (
    DEFAULT_ENDPOINT_CONCURRENCY, DEFAULT_EXTRACTOR_CONCURRENCY, DEFAULT_EXTRACTOR_KEY_ENV, DEFAULT_EXTRACTOR_MODEL,
    DEFAULT_OUTPUT_DIR, ENDPOINT_API_KEY_ENV, STAGES, RunConfig, example_study_path,
)
from pipeline.local import RunResult, load_inputs, run_local
from pipeline.plan import build_plan, plan_as_dicts
from pipeline.progress import ProgressReporter
from pipeline.registry import EMBEDDED_DEFAULT, load_registry
from schemas.settings import DEFAULT_MAX_TOKENS, DEFAULT_SEED, DEFAULT_TEMPERATURE, DEFAULT_TOP_P, SamplingSettings
from steps.errors import ConfigError, GraceError
from steps.probabilities import DEFAULT_MIN_OPTION_MASS
from steps.query import DEFAULT_MAX_FAILED_FRACTION
from steps.validate import DEFAULT_MIN_CONFIDENCE
from steps.studies import available_studies

EXIT_INTERRUPTED = 130


def _endpoint(value: str) -> tuple[str, tuple[str, ...]]:
    name, sep, urls = value.partition("=")
    parts = tuple(u.strip() for u in urls.split(",") if u.strip())
    if not sep or not name.strip() or not parts or not all(u.startswith(("http://", "https://")) for u in parts):
        raise argparse.ArgumentTypeError(f"expected MODEL=URL[,URL...] with http(s) URLs, got {value!r}")
    return name.strip(), parts


def _add_input_options(parser: argparse.ArgumentParser) -> None:
    for number in available_studies():
        parser.add_argument(f"--study{number}", metavar="PATH", help=f"Study {number} CSV (default: the bundled example stimuli)")
    parser.add_argument("--studies", default=",".join(map(str, available_studies())), help="Which studies to run, e.g. '1' or '1,2' (default: %(default)s)")
    parser.add_argument("--encoding", default="utf-8", help="Encoding of the study files (default: %(default)s; e.g. cp1252 for old Excel exports)")
    parser.add_argument("--limit", type=int, metavar="N", help="Use only the first N rows of each study file")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="grace-pipeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"grace-pipeline {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="Run the pipeline on this machine (embedded model server by default)",
                         description="Validate the study files, start (or reach) the model servers, run Experiment 1 "
                                     "(query), structured extraction (extract) and Experiment 2 (probabilities) for every model x study, and write one table "
                                     "per stage x model x study. Re-running the same command resumes: finished rows are not redone.")
    _add_input_options(run)
    run.add_argument("--models", help=f"Comma-separated registry names (default: {EMBEDDED_DEFAULT}, or the models given with --endpoint)")
    run.add_argument("--endpoint", action="append", type=_endpoint, default=[], metavar="MODEL=URL",
                     help="Use an existing OpenAI-compatible server (e.g. vLLM) for MODEL; repeat per model; "
                          f"several comma-separated URLs are replicas. API key, if needed, from ${ENDPOINT_API_KEY_ENV}")
    run.add_argument("--store", "--output", dest="store", default=DEFAULT_OUTPUT_DIR, metavar="URL",
                     help="Where runs are kept: a folder, file:///folder or s3://bucket/prefix (default: %(default)s). "
                          "S3 credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY")
    run.add_argument("--s3-endpoint", metavar="URL", help="S3-compatible endpoint, e.g. http://minio:9000 (default: $AWS_ENDPOINT_URL_S3 or $AWS_ENDPOINT_URL, else AWS)")
    run.add_argument("--run-id", help="Name of the run (default: derived from inputs, prompts and sampling, so the same command resumes)")
    run.add_argument("--stages", default=",".join(STAGES), help="Stages to run (default: %(default)s)")
    run.add_argument("--concurrency", type=int, help=f"Requests in flight per model server (default: {DEFAULT_ENDPOINT_CONCURRENCY} for an endpoint, one per embedded worker)")
    run.add_argument("--embedded-workers", type=int, help="Embedded server processes (default: one per core, at most 2)")
    run.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE, help="Sampling temperature (default: %(default)s)")
    run.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS, help="Max generated tokens per answer (default: %(default)s; reasoning models use their registry value if larger)")
    run.add_argument("--top-p", type=float, default=DEFAULT_TOP_P, help="Nucleus sampling top_p (default: %(default)s)")
    run.add_argument("--seed", type=int, default=DEFAULT_SEED, help="Run seed; each row x replication gets its own recorded seed (default: %(default)s)")
    run.add_argument("--replications", type=int, default=1, help="Samples per row, each with its own seed (default: %(default)s)")
    run.add_argument("--max-failed-fraction", type=float, default=DEFAULT_MAX_FAILED_FRACTION,
                     help="A step fails (exit 3) when more than this share of its rows failed (default: %(default)s)")
    run.add_argument("--scoring", choices=["exact", "first-token"], default="exact",
                     help="Experiment 2 method: 'exact' scores each option's full continuation; 'first-token' is the seed's "
                          "method, kept for comparison (options whose first token collides are reported, not guessed)")
    run.add_argument("--min-option-mass", type=float, default=DEFAULT_MIN_OPTION_MASS,
                     help="Flag rows whose answer options carried less total probability than this (default: %(default)s)")
    run.add_argument("--extractor-url", help="OpenAI-compatible base URL of the LLM extractor, e.g. https://api.deepseek.com "
                                            "(default: the embedded model)")
    run.add_argument("--extractor-model", default=DEFAULT_EXTRACTOR_MODEL, help="Extractor model name (default: %(default)s)")
    run.add_argument("--extractor-api-key-env", default=DEFAULT_EXTRACTOR_KEY_ENV,
                     help="Environment variable with the extractor's API key (default: %(default)s); never logged")
    run.add_argument("--extractor-json-mode", choices=["json_object", "json_schema", "llama_schema", "none"], default="json_object",
                     help="How the extractor is asked for JSON: json_object (DeepSeek API), json_schema (vLLM), llama_schema (llama.cpp)")
    run.add_argument("--extractor-concurrency", type=int, default=DEFAULT_EXTRACTOR_CONCURRENCY,
                     help="Extractor requests in flight (default: %(default)s; respects 429 Retry-After)")
    run.add_argument("--min-extraction-confidence", type=float, default=DEFAULT_MIN_CONFIDENCE,
                     help="Validation flags rows whose extraction confidence is below this (default: %(default)s)")
    run.add_argument("--request-timeout", type=float, default=600.0, help="Seconds to wait for one answer (default: %(default)s)")

    validate = sub.add_parser("validate", help="Check study files without calling any model")
    _add_input_options(validate)

    sub.add_parser("models", help="List the model registry")

    plan = sub.add_parser("plan", help="Print the DAG (nodes and dependencies) as JSON")
    plan.add_argument("--models", default=EMBEDDED_DEFAULT)
    plan.add_argument("--studies", default=",".join(map(str, available_studies())))
    plan.add_argument("--stages", default=",".join(STAGES))
    return parser


def _csv_list(value: str, what: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise ConfigError(f"--{what} is empty")
    return items


def _studies(args: argparse.Namespace) -> dict[int, str]:
    try:
        numbers = [int(n) for n in _csv_list(args.studies, "studies")]
    except ValueError as exc:
        raise ConfigError(f"--studies must list study numbers like '1,2', got {args.studies!r}") from exc
    unknown = [n for n in numbers if n not in available_studies()]
    if unknown:
        raise ConfigError(f"unknown study {unknown}; available: {available_studies()}")
    return {n: getattr(args, f"study{n}") or example_study_path(n) for n in numbers}


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The run's configuration from parsed options (raises ConfigError on invalid values)."""
    endpoints = dict(args.endpoint)
    models = _csv_list(args.models, "models") if args.models else (list(endpoints) or [EMBEDDED_DEFAULT])
    try:
        return RunConfig(
            studies=_studies(args), models=tuple(models), endpoints=endpoints, stages=tuple(_csv_list(args.stages, "stages")),
            store=args.store, s3_endpoint=args.s3_endpoint, run_id=args.run_id, row_limit=args.limit, replications=args.replications,
            sampling=SamplingSettings(temperature=args.temperature, max_tokens=args.max_tokens, top_p=args.top_p, seed=args.seed),
            concurrency=args.concurrency, request_timeout_s=args.request_timeout, max_failed_fraction=args.max_failed_fraction,
            embedded_workers=args.embedded_workers, encoding=args.encoding, scoring=args.scoring,
            min_option_mass=args.min_option_mass, extractor_url=args.extractor_url, extractor_model=args.extractor_model,
            extractor_api_key_env=args.extractor_api_key_env, extractor_json_mode=args.extractor_json_mode,
            extractor_concurrency=args.extractor_concurrency, min_extraction_confidence=args.min_extraction_confidence,
        )
    except ValidationError as exc:
        details = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid option value: {details}") from exc


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
        table.add_row(r.node.stage, str(r.node.model or "all"), str(r.node.study or "all"), str(r.done), str(r.failed), str(r.resumed), f"{r.wall_s:.1f} s", rate)
    console.print(table)
    print(f"Outputs of {result.run_id} ({result.wall_s:.1f} s): {result.run_uri}")
    for r in result.results:
        for path in r.outputs:
            print(f"  {path}")
    reports = [p for r in result.results if r.node.stage == "report" and r.error is None for p in r.outputs]
    for report in reports:
        print(f"Quality report: {Path(report).as_uri() if result.run_path else report}")
    for error in result.errors:
        print(f"error: {error}")


def _cmd_run(args: argparse.Namespace, console: Console) -> int:
    started = time.perf_counter()
    config = config_from_args(args)
    err = Console(stderr=True)
    result = asyncio.run(run_local(config, ProgressReporter(err), started))
    print_summary(console, result)
    return max((e.exit_code for e in result.errors), default=0)


def _cmd_validate(args: argparse.Namespace, console: Console) -> int:
    studies = _studies(args)
    config = RunConfig(studies=studies, models=(EMBEDDED_DEFAULT,), row_limit=args.limit, encoding=args.encoding)
    for number, (spec, table) in load_inputs(config).items():
        console.print(f"study {number} ({spec.name}): {table.path}: {len(table.frame)} rows OK")
        for warning in table.warnings:
            console.print(f"  warning: {warning}")
    return 0


def _cmd_models(console: Console) -> int:
    table = Table(title="Model registry (pipeline/models.yaml)")
    for column in ("name", "hf_id", "engine", "dtype", "tp", "gpus", "max_len", "notes"):
        table.add_column(column)
    for m in load_registry().values():
        notes = ("reasoning; " if m.reasoning else "") + ("gated (HF_TOKEN); " if m.gated else "") + m.notes
        table.add_row(m.name, m.hf_id, m.engine, m.dtype, str(m.tensor_parallel_size), str(m.gpus), str(m.max_model_len), notes)
    console.print(table)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console() if sys.stdout.isatty() else Console(width=160)  # logs: do not truncate the summary
    try:
        if args.command == "run":
            return _cmd_run(args, console)
        if args.command == "validate":
            return _cmd_validate(args, console)
        if args.command == "models":
            return _cmd_models(console)
        nodes = build_plan(_csv_list(args.models, "models"), [int(s) for s in _csv_list(args.studies, "studies")], _csv_list(args.stages, "stages"))
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
