"""Command-line options shared by the commands that run the pipeline (``run``, ``cluster-plan``), and the
run configuration built from them."""

from __future__ import annotations

import argparse
import os
import typing

from pydantic import ValidationError

from pipeline.config import (
    DEFAULT_ENDPOINT_CONCURRENCY,
    DEFAULT_EXTRACTOR_CONCURRENCY,
    DEFAULT_EXTRACTOR_KEY_ENV,
    DEFAULT_EXTRACTOR_MODEL,
    DEFAULT_OUTPUT_DIR,
    ENDPOINT_API_KEY_ENV,
    STAGES,
    RunConfig,
    example_study_path,
)
from pipeline.registry import EMBEDDED_DEFAULT
from schemas.fits import BootstrapMethod, FitSettings, SemanticsMode
from schemas.probabilities import ScoringMethod
from schemas.settings import (
    DEFAULT_ALPHA,
    DEFAULT_EQUIVALENCE_MARGIN,
    DEFAULT_MAX_TOKENS,
    DEFAULT_SEED,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_P,
    AnalysisSettings,
    SamplingSettings,
)
from steps.errors import ConfigError
from steps.exclusions import CHECKS as STUDY1_CHECKS
from steps.extract import DEFAULT_JSON_MODE, JSON_MODE_HELP, JSON_MODES
from steps.human import HUMAN_FORMATS
from steps.llm_client import redact_url
from steps.probabilities import DEFAULT_MIN_OPTION_MASS
from steps.query import DEFAULT_MAX_FAILED_FRACTION
from steps.studies import available_studies
from steps.validate import DEFAULT_MIN_CONFIDENCE

HUMAN_FORMAT_HELP = {
    1: "long format, one row per trial: subid, story, access, observe and any of prior, bet_0..bet_3, knowledge (README)",
    2: "speaker production as Yoon et al. (2020) published it: subid, trial, item, goal, true_state, positivity, utterance",
}


def _endpoint(value: str) -> tuple[str, tuple[str, ...]]:
    """MODEL=URL[,URL...]; MODEL= (no URL) means no endpoint: the model is served here (embedded) or by a sidecar."""
    name, sep, urls = value.partition("=")
    parts = tuple(u.strip() for u in urls.split(",") if u.strip())
    if not sep or not name.strip() or not all(u.startswith(("http://", "https://")) for u in parts):
        raise argparse.ArgumentTypeError(f"expected MODEL=URL[,URL...] with http(s) URLs, got {redact_url(value)!r}")
    return name.strip(), parts


def _endpoints(value: str) -> list[tuple[str, tuple[str, ...]]]:
    """MODEL=URL;MODEL=URL (empty: none)."""
    return [_endpoint(v.strip()) for v in value.split(";") if v.strip()]


def add_input_options(parser: argparse.ArgumentParser) -> None:
    """Add the input options to ``parser``: --study<N>, --human<N>, --studies, --encoding and --limit."""
    for number in available_studies():
        parser.add_argument(f"--study{number}", metavar="PATH", help=f"Study {number} CSV (default: the bundled example stimuli)")
    for number in HUMAN_FORMATS:
        parser.add_argument(f"--human{number}", metavar="PATH", default="",
                            help=f"Human data for study {number} (CSV, path or s3://) that the report compares the models with; "
                                 f"{HUMAN_FORMAT_HELP[number]} (default: none)")
    parser.add_argument("--studies", default=",".join(map(str, available_studies())),
                        help="Which studies to run, e.g. '1' or '1,2' (default: %(default)s)")
    parser.add_argument("--encoding", default="utf-8",
                        help="Encoding of the study files (default: %(default)s; e.g. cp1252 for old Excel exports)")
    parser.add_argument("--limit", type=int, metavar="N", help="Use only the first N rows of each study file (0: all)")


def _checks(value: str) -> tuple[str, ...]:
    """--study1-exclude: comma-separated Study 1 checks (empty: none)."""
    checks = tuple(v.strip() for v in value.split(",") if v.strip())
    unknown = [c for c in checks if c not in STUDY1_CHECKS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown check {unknown[0]!r}; choose from {', '.join(STUDY1_CHECKS)}")
    return checks


def add_analysis_options(parser: argparse.ArgumentParser) -> None:
    """Add how the report judges the papers' findings: --alpha, --equivalence-margin and --study1-exclude."""
    parser.add_argument("--alpha", type=float, default=DEFAULT_ALPHA, metavar="A",
                        help="Familywise error rate of each source's findings (Holm's correction after Tarone's screen; "
                             "at most 0.2; default: %(default)s; stated in the report)")
    parser.add_argument("--equivalence-margin", type=float, default=DEFAULT_EQUIVALENCE_MARGIN, metavar="M",
                        help="Smallest difference that matters in the findings, on the 0-1 scale of a normalised bet or an "
                             "utterance share: a 'no longer greater' finding is reproduced when its difference is shown below "
                             "it (default: %(default)s; stated in the report)")
    parser.add_argument("--study1-exclude", type=_checks, default=(), metavar="CHECKS",
                        help="Leave out Study 1 trials failing the researchers' checks: 'prior' (prior answer not 3), "
                             "'knowledge' (knowledge answer contradicts access), or 'prior,knowledge' (default: none; counted "
                             "in the report)")


def add_registry_option(parser: argparse.ArgumentParser) -> None:
    """Add --registry (a researcher's registry YAML merged over the shipped one) to ``parser``."""
    parser.add_argument("--registry", metavar="FILE",
                        help="Your model registry YAML (path or s3:// URL, shaped like pipeline/models.yaml), "
                             "merged over the shipped one: new names add models, a shipped name gets the fields you give")


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """Add every option of a run to ``parser``: inputs, models, registry, endpoints, store and run settings."""
    add_input_options(parser)
    add_analysis_options(parser)
    parser.add_argument("--models",
                        help=f"Comma-separated registry names (default: {EMBEDDED_DEFAULT}, or the models given with --endpoint)")
    add_registry_option(parser)
    parser.add_argument("--endpoint", action="append", type=_endpoint, default=[], metavar="MODEL=URL",
                     help="Use an existing OpenAI-compatible server (e.g. vLLM) for MODEL; repeat per model; "
                          f"several comma-separated URLs are replicas. API key, if needed, from ${ENDPOINT_API_KEY_ENV}")
    parser.add_argument("--store", "--output", dest="store", default=DEFAULT_OUTPUT_DIR, metavar="URL",
                     help="Where runs are kept: a folder, file:///folder or s3://bucket/prefix (default: %(default)s). "
                          "S3 credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY")
    parser.add_argument("--s3-endpoint", metavar="URL",
                        help="S3-compatible endpoint, e.g. http://minio:9000 "
                             "(default: $AWS_ENDPOINT_URL_S3 or $AWS_ENDPOINT_URL, else AWS)")
    parser.add_argument("--run-id",
                        help="Name of the run (default: derived from inputs, prompts and sampling, so the same command resumes)")
    parser.add_argument("--stages", default=",".join(STAGES), help="Stages to run (default: %(default)s)")
    parser.add_argument("--concurrency", type=int,
                        help=f"Requests in flight per model server (default: {DEFAULT_ENDPOINT_CONCURRENCY} for an endpoint, "
                             "one per embedded worker)")
    parser.add_argument("--embedded-workers", type=int, help="Embedded server processes (default: one per core, at most 2)")
    parser.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE, help="Sampling temperature (default: %(default)s)")
    parser.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS,
                        help="Max generated tokens per answer (default: %(default)s; reasoning models use their registry value if larger)")
    parser.add_argument("--top-p", type=float, default=DEFAULT_TOP_P, help="Nucleus sampling top_p (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help="Run seed; each row x replication gets its own recorded seed (default: %(default)s)")
    parser.add_argument("--replications", type=int, default=1, help="Samples per row, each with its own seed (default: %(default)s)")
    parser.add_argument("--max-failed-fraction", type=float, default=DEFAULT_MAX_FAILED_FRACTION,
                     help="A step fails (exit 3) when more than this share of its rows failed (default: %(default)s)")
    parser.add_argument("--scoring", choices=typing.get_args(ScoringMethod), default="exact",
                     help="Experiment 2 method: 'exact' scores each option's full continuation under the server's chat template; "
                          "'first-token' is a repaired first-token variant, for comparison (options whose first token collides are "
                          "reported, not guessed); 'seed-literal' reproduces the seed's method verbatim, for reproduction only "
                          "(README). First-token methods refuse Study 2")
    parser.add_argument("--min-option-mass", type=float, default=DEFAULT_MIN_OPTION_MASS,
                     help="Flag rows whose answer options carried less total probability than this (default: %(default)s)")
    parser.add_argument("--extractor-url", help="OpenAI-compatible base URL of the LLM extractor, e.g. https://api.deepseek.com "
                                            "(default: the embedded model)")
    parser.add_argument("--extractor-model", default=DEFAULT_EXTRACTOR_MODEL, help="Extractor model name (default: %(default)s)")
    parser.add_argument("--extractor-api-key-env", default=DEFAULT_EXTRACTOR_KEY_ENV,
                     help="Environment variable with the extractor's API key (default: %(default)s); never logged")
    parser.add_argument("--extractor-json-mode", choices=JSON_MODES, default=DEFAULT_JSON_MODE, help=JSON_MODE_HELP)
    parser.add_argument("--extractor-concurrency", type=int, default=DEFAULT_EXTRACTOR_CONCURRENCY,
                     help="Extractor requests in flight (default: %(default)s; respects 429 Retry-After)")
    parser.add_argument("--min-extraction-confidence", type=float, default=DEFAULT_MIN_CONFIDENCE,
                     help="Validation flags rows whose extraction confidence is below this (default: %(default)s)")
    parser.add_argument("--request-timeout", type=float, default=600.0, help="Seconds to wait for one answer (default: %(default)s)")
    parser.add_argument("--endpoints", type=_endpoints, default=[], metavar="MODEL=URL;MODEL=URL",
                        help="Several --endpoint values in one option (how the cluster workflow passes them); "
                             "entries for models not in --models are ignored")
    parser.add_argument("--checkpoint-store", default=os.environ.get("GRACE_CHECKPOINT_STORE") or None, metavar="URL",
                        help="Keep checkpoints and the manifest here instead of in --store (default: $GRACE_CHECKPOINT_STORE; "
                             "the cluster steps write tables locally for Argo to upload and checkpoints to S3)")
    parser.add_argument("--wait-for-endpoint", type=float, default=0.0, metavar="SECONDS",
                        help="Poll each --endpoint's /health up to this long before starting (a vLLM sidecar loading its model)")
    parser.add_argument("--wait-for-lock", type=float, default=0.0, metavar="SECONDS",
                        help="When another run holds this run id (exit 7), wait up to this long for it to finish (default: fail at once)")
    add_fit_options(parser)


def add_fit_options(parser: argparse.ArgumentParser) -> None:
    """Add the options of the papers' model fits (stage ``fit``, command ``grace-pipeline fit``) to ``parser``."""
    defaults = FitSettings()
    parser.add_argument("--fit-semantics", metavar="PATH", default="",
                        help="Study 2 polite-speaker fit: literal-semantics norming judgements (CSV, path or s3://; one row per "
                             "judgement: state, positivity, utterance, judgment, optional subid; default: Yoon et al. 2020's, shipped)")
    parser.add_argument("--fit-semantics-mode", choices=typing.get_args(SemanticsMode), default=defaults.semantics_mode,
                        help="joint: the semantics are inferred with the choices, constrained by the norming judgements, as the "
                             "paper does; fixed: held at the norming judgements (default: %(default)s)")
    parser.add_argument("--fit-resamples", type=int, default=defaults.resamples,
                        help="Bootstrap resamples per source for the fits' intervals (0: none; default: %(default)s)")
    parser.add_argument("--fit-bootstrap", choices=typing.get_args(BootstrapMethod), default=defaults.bootstrap,
                        help="Study 2: newton re-estimates each resample with Newton steps from the estimate (fast); refit runs "
                             "the optimiser to convergence (slower; default: %(default)s)")
    parser.add_argument("--fit-starts", type=int, default=defaults.starts,
                        help="Optimiser starts of the Study 2 fit (default: %(default)s)")
    parser.add_argument("--fit-seed", type=int, default=defaults.seed,
                        help="Seed of the fits' starts and resamples: the same data and seed give the same fit (default: %(default)s)")


def fit_settings_from_args(args: argparse.Namespace) -> FitSettings:
    """The fit settings of parsed options (ConfigError on invalid values)."""
    try:
        return FitSettings(seed=args.fit_seed, resamples=args.fit_resamples, starts=args.fit_starts, semantics=args.fit_semantics or None,
                           semantics_mode=args.fit_semantics_mode, bootstrap=args.fit_bootstrap)
    except ValidationError as exc:
        details = "; ".join(f"--fit-{str(e['loc'][0]).replace('_', '-')}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid option value: {details}") from exc


def csv_list(value: str, what: str) -> list[str]:
    """The stripped, non-empty items of a comma-separated option value; ConfigError naming ``--what`` when there are none."""
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise ConfigError(f"--{what} is empty")
    return items


def study_paths(args: argparse.Namespace) -> dict[int, str]:
    """Study number -> its CSV (the given path or the bundled example); ConfigError for an unknown study number."""
    try:
        numbers = [int(n) for n in csv_list(args.studies, "studies")]
    except ValueError as exc:
        raise ConfigError(f"--studies must list study numbers like '1,2', got {args.studies!r}") from exc
    unknown = [n for n in numbers if n not in available_studies()]
    if unknown:
        raise ConfigError(f"unknown study {unknown}; available: {available_studies()}")
    return {n: getattr(args, f"study{n}") or example_study_path(n) for n in numbers}


def human_paths(args: argparse.Namespace, studies: dict[int, str]) -> dict[int, str]:
    """Study -> human data file; ConfigError for a human file of a study that is not run."""
    given = {n: value for n in HUMAN_FORMATS if (value := (getattr(args, f"human{n}", "") or "").strip())}
    unused = sorted(n for n in given if n not in studies)
    if unused:
        raise ConfigError(f"--human{unused[0]} was given but study {unused[0]} is not run (--studies {','.join(map(str, studies))}); "
                          f"add it to --studies or drop --human{unused[0]}")
    return given


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The run's configuration from parsed options (raises ConfigError on invalid values)."""
    given = [*args.endpoint, *args.endpoints]
    models = csv_list(args.models, "models") if args.models else ([name for name, _ in given] or [EMBEDDED_DEFAULT])
    bulk = {name for name, _ in args.endpoints if name not in models}  # --endpoints may list models this step does not run
    endpoints = {name: urls for name, urls in given if urls and name not in bulk}
    try:
        studies = study_paths(args)
        return RunConfig(
            studies=studies, human=human_paths(args, studies), models=tuple(models), registry=args.registry or None, endpoints=endpoints,
            stages=tuple(csv_list(args.stages, "stages")),
            store=args.store, s3_endpoint=args.s3_endpoint, checkpoint_store=args.checkpoint_store or None,
            wait_for_endpoint_s=args.wait_for_endpoint, run_id=args.run_id or None, row_limit=args.limit or None,
            replications=args.replications,
            sampling=SamplingSettings(temperature=args.temperature, max_tokens=args.max_tokens, top_p=args.top_p, seed=args.seed),
            concurrency=args.concurrency, request_timeout_s=args.request_timeout, max_failed_fraction=args.max_failed_fraction,
            embedded_workers=args.embedded_workers, encoding=args.encoding, scoring=args.scoring,
            min_option_mass=args.min_option_mass, extractor_url=args.extractor_url or None, extractor_model=args.extractor_model,
            extractor_api_key_env=args.extractor_api_key_env, extractor_json_mode=args.extractor_json_mode,
            extractor_concurrency=args.extractor_concurrency, min_extraction_confidence=args.min_extraction_confidence,
            lock_wait_s=args.wait_for_lock, fit=fit_settings_from_args(args),
            analysis=AnalysisSettings(alpha=args.alpha, equivalence_margin=args.equivalence_margin,
                                      study1_exclude=args.study1_exclude),
        )
    except ValidationError as exc:
        details = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid option value: {details}") from exc
