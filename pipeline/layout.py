"""Where a run's artifacts live: stage -> folder -> keys, one home for both runners.

Every key is relative to the run (``<store>/<run id>/...``); the local runner writes there,
the cluster steps write the same relative paths into their work folder and Argo uploads the
folder to the same keys in the artifact repository.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

from pipeline.plan import Node
from pipeline.registry import model_slug
from schemas.probabilities import PROBABILITY_ROW_MODELS
from schemas.raw_responses import raw_response_row_model
from schemas.settings import ModelSpec
from schemas.structured import STRUCTURED_ROW_MODELS
from steps.studies import StudySpec

# stage -> the folder (and Argo artifact name) holding its tables.
STAGE_FOLDERS = {"query": "exp1", "extract": "structured", "probabilities": "exp2", "validate": "validation", "merge": "analysis",
                 "fit": "fits"}
REPORT_KEY = "report.html"
COMPARISON_STEM = "comparison/human_model_comparison"  # the long human-vs-model table for R (.parquet, .csv)
SUMMARY_KEY = "run_summary.json"  # what finished and what failed, and why (pipeline.runner.outcome), written by the report


class StageKeys(NamedTuple):
    """One model x study stage: its checkpoint key, its output table stem (no extension) and its row model."""

    checkpoint: str
    stem: str
    row_model: type


def stage_keys(stage: str, spec: StudySpec, model: ModelSpec, scoring: str) -> StageKeys:
    """Keys of ``stage`` ('query', 'extract' or 'probabilities') for one model x study.

    Probabilities scored with a method other than 'exact' get their own files (suffix
    ``_<method>``), so two scoring methods never overwrite or resume each other.
    """
    slug, n = model_slug(model.name), spec.number
    if stage == "query":
        return StageKeys(f"checkpoints/exp1/{slug}_study{n}", f"exp1/{slug}_study{n}_raw_responses",
                         raw_response_row_model(spec.input_model))
    if stage == "extract":
        return StageKeys(f"checkpoints/extract/{slug}_study{n}", f"structured/{slug}_study{n}_structured", STRUCTURED_ROW_MODELS[n])
    if stage != "probabilities":
        raise ValueError(f"stage {stage!r} has no per-model tables")
    suffix = "" if scoring == "exact" else f"_{scoring}"
    return StageKeys(f"checkpoints/exp2/{slug}_study{n}{suffix}", f"exp2/{slug}_study{n}_probabilities{suffix}",
                     PROBABILITY_ROW_MODELS[spec.probability_summary])


def validation_keys(study: int) -> tuple[str, str]:
    """(validation JSON, flagged rows CSV) of one study."""
    return f"validation/study{study}_validation.json", f"validation/study{study}_flagged_rows.csv"


def analysis_stem(study: int) -> str:
    """The analysis-ready table of one study (stem; .parquet and .csv are written)."""
    return f"analysis/study{study}_analysis"


def fit_stems(study: int) -> tuple[str, str]:
    """(parameters, predictions) stems of the papers' model fitted to one study's sources (each with a ``_codebook.csv``)."""
    return f"fits/study{study}_rsa_parameters", f"fits/study{study}_rsa_predictions"


def codebook_key(study: int) -> str:
    """The store key of study ``study``'s codebook CSV (the analysis table's columns explained)."""
    return f"analysis/study{study}_codebook.csv"


def manifest_key(shared_checkpoint_store: bool, nodes: list[Node]) -> str:
    """'manifest.json' for a run; one file per node set when cluster steps share a checkpoint store in parallel."""
    if not shared_checkpoint_store:
        return "manifest.json"
    joined = "_".join(n.name for n in nodes) or "empty"  # node names are Argo names: letters, digits, '-'
    if len(joined) > 120:  # one file per node set, still: a digest of the whole set
        joined = joined[:100] + "-" + hashlib.sha256(joined.encode()).hexdigest()[:10]
    return f"manifests/{joined}.json"


def node_status_key(node_name: str) -> str:
    """Where a model node's status record lives (in the run's durable store): how it ended, and why (pipeline.runner.outcome)."""
    return f"status/{node_name}.json"
