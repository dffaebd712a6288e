"""A run's setup, the same for both runners: validated inputs, resolved models, run id, extractor key.

Nothing here starts a server or sends a request: every check a run can make before model
time is spent lives here, so the local runner and the cluster's plan step refuse the same
mistakes with the same messages.
"""

from __future__ import annotations

import os
from typing import Optional

import httpx

from pipeline.config import RunConfig, derive_run_id
from pipeline.registry import load_registry, model_slug, resolve_model
from schemas.settings import ModelSpec
from steps.errors import ConfigError, InputValidationError
from steps.human import HumanTable, load_human_table
from steps.inputs import StudyTable, load_study_table
from steps.llm_client import redact_url
from steps.probabilities import check_scoring_method
from steps.rsa_polite import load_literal_semantics
from steps.studies import StudySpec, load_study

Inputs = dict[int, tuple[StudySpec, StudyTable]]
HumanData = dict[int, HumanTable]


def extractor_api_key(config: RunConfig) -> Optional[str]:
    """The extractor's API key from the environment; ConfigError before any call if it is needed and missing.

    A loopback extractor (a local server) may run without a key.
    """
    if not config.extractor_url:
        return None
    key = os.environ.get(config.extractor_api_key_env) or None
    host = httpx.URL(config.extractor_url).host
    if key is None and host not in ("127.0.0.1", "localhost", "::1"):
        raise ConfigError(
            f"the LLM extractor at {redact_url(config.extractor_url)} needs an API key: set ${config.extractor_api_key_env} "
            "(or name another variable with --extractor-api-key-env; in the cluster it comes from a Kubernetes Secret)"
        )
    return key


def load_inputs(config: RunConfig) -> Inputs:
    """The validated study files (see :func:`load_run_inputs`: human data files are validated too)."""
    return load_run_inputs(config)[0]


def load_run_inputs(config: RunConfig) -> tuple[Inputs, HumanData]:
    """Validate every study file and every human data file, before any model is started.

    Problems of all files are reported together in one InputValidationError (file, row, column).
    """
    loaded: Inputs = {}
    human: HumanData = {}
    problems: list[InputValidationError] = []
    for number, path in sorted(config.studies.items()):
        spec = load_study(number)
        if "probabilities" in config.stages:
            check_scoring_method(spec, config.scoring)  # e.g. first-token methods cannot score Study 2
        try:
            table = load_study_table(path, spec, encoding=config.encoding, s3_endpoint=config.s3_endpoint)
        except InputValidationError as exc:
            problems.append(exc)
            continue
        if config.row_limit is not None:
            table = StudyTable(table.path, table.sha256, table.frame.head(config.row_limit).reset_index(drop=True), table.warnings)
        loaded[number] = (spec, table)
    for number, path in sorted(config.human.items()):
        try:
            human[number] = load_human_table(number, path, encoding=config.encoding, s3_endpoint=config.s3_endpoint)
        except InputValidationError as exc:
            problems.append(exc)
    if "fit" in config.stages and 2 in config.studies:
        problems += check_fit_inputs(config)
    if problems:
        raise problems[0] if len(problems) == 1 else InputValidationError.combine(problems)
    return loaded, human


def check_fit_inputs(config: RunConfig) -> list[InputValidationError]:
    """The problems of the Study 2 fit's norming file (``--fit-semantics``; the shipped one by default), found before any model time."""
    try:
        load_literal_semantics(config.fit.semantics, config.s3_endpoint)
    except InputValidationError as exc:
        return [exc]
    return []


def run_id_for(config: RunConfig, inputs: Inputs) -> str:
    """The run id: the one given, or one derived from the inputs' hashes, the prompt templates and sampling.

    The same inputs give the same id on a laptop and on the cluster, so a re-run resumes.
    """
    if config.run_id:
        return config.run_id
    templates = {n: f"{s.query_prompt.hash}:{s.extraction_prompt.hash}:{s.probability_hash}" for n, (s, _) in inputs.items()}
    return derive_run_id({n: t.sha256 for n, (_, t) in inputs.items()}, templates, config.sampling)


def models_for(names, registry: Optional[str], endpoint_names=(), s3_endpoint: Optional[str] = None) -> dict[str, ModelSpec]:
    """THE resolution of a run's models, used by every runner and step (local run, plan, cluster-plan, serve, submit's
    checks and cost model): each name's entry in the shipped registry with ``registry`` (the researcher's YAML, a path
    or s3:// URL; ``--registry`` / the workflow's ``registry`` parameter) merged over it. A name outside the registry
    is allowed only when it is in ``endpoint_names`` (a model on the user's own server). ConfigError otherwise, and
    when two names give the same file-name slug."""
    merged = load_registry(registry, s3_endpoint)
    models = {name: resolve_model(name, external=name in endpoint_names, registry=merged) for name in names}
    slugs = [model_slug(n) for n in models]
    if len(set(slugs)) != len(slugs):
        raise ConfigError(f"two models give the same file name slug: {slugs}")
    return models


def resolve_models(config: RunConfig, require_endpoints: bool = True) -> dict[str, ModelSpec]:
    """Registry entries for the run's models (:func:`models_for` with the run's registry).

    With ``require_endpoints`` a vLLM model needs an ``--endpoint`` (the local runner sending
    it requests); without it (the cluster, where a vLLM sidecar serves it, or stages that send
    the model no request) none is needed.
    """
    unknown_endpoints = [m for m in config.endpoints if m not in config.models]
    if unknown_endpoints:
        raise ConfigError(f"--endpoint given for {unknown_endpoints}, which are not among the models to run {list(config.models)}")
    models = models_for(config.models, config.registry, config.endpoints, config.s3_endpoint)
    for name, spec in models.items():
        if spec.engine != "embedded" and name not in config.endpoints and require_endpoints:
            raise ConfigError(
                f"model {name!r} is served by vLLM: start a vLLM server for {spec.hf_id} and pass --endpoint {name}=URL "
                "(or run it on the cluster)"
            )
    return models
