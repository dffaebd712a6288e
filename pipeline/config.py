"""One frozen, typed configuration per run. Defaults are named constants.

Secrets are not part of the configuration: an endpoint API key is read from the
environment variable named by :data:`ENDPOINT_API_KEY_ENV` when the client is made.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field

from pipeline.plan import ALL_STAGES
from schemas.fits import FitSettings
from schemas.probabilities import ScoringMethod
from schemas.settings import AnalysisSettings, SamplingSettings
from steps.extract import DEFAULT_JSON_MODE, JSON_MODE_HELP, JsonMode
from steps.llm_client import DEFAULT_REQUEST_TIMEOUT_S
from steps.probabilities import DEFAULT_MIN_OPTION_MASS
from steps.query import DEFAULT_MAX_FAILED_FRACTION
from steps.store import Store, open_store
from steps.validate import DEFAULT_MIN_CONFIDENCE

DEFAULT_OUTPUT_DIR = "grace-output"
DEFAULT_ENDPOINT_CONCURRENCY = 16
ENDPOINT_API_KEY_ENV = "GRACE_ENDPOINT_API_KEY"
STAGES = ALL_STAGES
DEFAULT_EXTRACTOR_MODEL = "deepseek-chat"
DEFAULT_EXTRACTOR_KEY_ENV = "DEEPSEEK_API_KEY"
DEFAULT_EXTRACTOR_CONCURRENCY = 4


def example_study_path(number: int) -> str:
    """Path of the example stimuli shipped with the package for study ``number``."""
    return str(resources.files("pipeline") / "data" / f"study{number}_example.csv")


class RunConfig(BaseModel):
    """Everything that decides what a run does."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    studies: dict[int, str] = Field(description="Study number -> input CSV path")
    human: dict[int, str] = Field(default_factory=dict,
                                  description="Study number -> human data CSV (--human1/--human2) the report compares the models with")
    models: tuple[str, ...] = Field(min_length=1)
    registry: Optional[str] = Field(None,
                                    description="The researcher's model registry YAML (path or s3:// URL), merged over the shipped one")
    endpoints: dict[str, tuple[str, ...]] = Field(default_factory=dict,
                                                  description="Model -> base URLs of an existing OpenAI-compatible server")
    stages: tuple[str, ...] = STAGES
    store: str = Field(DEFAULT_OUTPUT_DIR, description="Where runs are kept: a folder, file:///folder or s3://bucket/prefix")
    checkpoint_store: Optional[str] = Field(None, description="Where checkpoints (and the manifest) go when not in the store: "
                                            "on the cluster the step's outputs are local files Argo uploads, "
                                            "while checkpoints must outlive the pod (s3://...)")
    wait_for_endpoint_s: float = Field(0.0, ge=0.0, description="Poll each endpoint's /health this long before the first request "
                                                             "(a vLLM sidecar loading its model)")
    s3_endpoint: Optional[str] = Field(None,
                                       description="S3-compatible endpoint URL (default: $AWS_ENDPOINT_URL_S3, $AWS_ENDPOINT_URL, or AWS)")
    run_id: Optional[str] = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
    row_limit: Optional[int] = Field(None, ge=1)
    replications: int = Field(1, ge=1, le=1000)
    sampling: SamplingSettings = SamplingSettings()
    concurrency: Optional[int] = Field(None, ge=1, le=1024, description="Requests in flight per model server "
                                                                       "(default: 16 for an endpoint, one per embedded worker)")
    request_timeout_s: float = Field(DEFAULT_REQUEST_TIMEOUT_S, gt=0)
    max_failed_fraction: float = Field(DEFAULT_MAX_FAILED_FRACTION, ge=0.0, le=1.0)
    embedded_workers: Optional[int] = Field(None, ge=1, le=64)
    encoding: str = "utf-8"
    scoring: ScoringMethod = Field(
        "exact", description="Experiment 2 method; 'first-token' (repaired) and 'seed-literal' (the seed's verbatim) are for comparison")
    min_option_mass: float = Field(DEFAULT_MIN_OPTION_MASS, ge=0.0, le=1.0,
                                   description="Flag rows whose options carried less probability than this")
    extractor_url: Optional[str] = Field(None, description="OpenAI-compatible base URL of the LLM extractor (default: the embedded model)")
    extractor_model: str = DEFAULT_EXTRACTOR_MODEL
    extractor_api_key_env: str = Field(DEFAULT_EXTRACTOR_KEY_ENV, description="Environment variable holding the extractor's API key")
    extractor_json_mode: JsonMode = Field(DEFAULT_JSON_MODE, description=JSON_MODE_HELP)
    extractor_concurrency: int = Field(DEFAULT_EXTRACTOR_CONCURRENCY, ge=1, le=256)
    min_extraction_confidence: float = Field(DEFAULT_MIN_CONFIDENCE, ge=0.0, le=1.0,
                                             description="Flag rows whose extraction confidence is below this")
    analysis: AnalysisSettings = Field(default_factory=AnalysisSettings,
                                       description="How the report judges the published findings (alpha, margin, exclusions)")
    lock_wait_s: float = Field(0.0, ge=0.0, description="Wait this long for another run holding this run id's nodes (steps.run_lock) "
                                                     "before giving up")
    fit: FitSettings = Field(FitSettings(), description="How the papers' models are fitted (stage fit; grace-pipeline fit)")


def derive_run_id(input_hashes: dict[int, str], template_hashes: dict[int, str], sampling: SamplingSettings) -> str:
    """A stable run id from what decides the answers: the same command resumes the same run.

    Row limit, replications and the model list are not part of it: they select which
    rows of the run to compute, so a larger limit extends a run instead of starting anew.
    """
    basis = json.dumps(
        {"inputs": input_hashes, "templates": template_hashes, "sampling": sampling.model_dump()}, sort_keys=True
    )
    return "run-" + hashlib.sha256(basis.encode()).hexdigest()[:10]


def run_store(config: RunConfig, run_id: str) -> Store:
    """The store holding everything of one run: ``<store>/<run_id>/``."""
    return open_store(config.store, config.s3_endpoint).child(run_id)


def checkpoint_store(config: RunConfig, run_id: str) -> Store:
    """Where the run's checkpoints and manifest go: ``<checkpoint store>/<run_id>/``, by default the run's store."""
    return open_store(config.checkpoint_store, config.s3_endpoint).child(run_id) if config.checkpoint_store else run_store(config, run_id)
