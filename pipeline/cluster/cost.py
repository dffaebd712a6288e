"""The cluster run's cost model: per model, vLLM loads, bytes downloaded, estimated GPU-minutes.

Printed by ``grace-pipeline submit`` (and ``--dry-run``) before anything starts, and by the
workflow's ``plan`` step. Every assumption is in ``pipeline/models.yaml`` (per model:
``weights_gb``, ``load_minutes``, ``answers_per_minute``, ``scored_rows_per_minute``; for the
cluster: ``cost.hub_download_gb_per_minute``), so a researcher can correct them with measured
figures. Two layouts are modelled:

* ``once``: this workflow. One vLLM start per model serves Experiment 1 and Experiment 2 of
  every study; weights come from the cluster's cache (the chart's PVC), downloaded from the
  hub at most once per cluster (``cache_warm=False`` counts that one download).
* ``per-step``: the previous layout, kept for comparison. One vLLM start per served stage x
  study, each downloading the weights from the hub into an emptyDir.

GPU-minutes = GPUs x (loads x minutes per load + answers / answers_per_minute + scored rows /
scored_rows_per_minute). Minutes per load = ``load_minutes`` plus, when the weights are
downloaded by that load, ``weights_gb / hub_download_gb_per_minute``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Literal

import yaml

from pipeline.plan import SERVED_STAGES
from schemas.settings import ModelSpec

Layout = Literal["once", "per-step"]
STARTUP_MARGIN_MINUTES = 5.0
DEFAULT_PENDING_MINUTES = 60  # a GPU pod may wait this long to be scheduled (a busy cluster, an autoscaler adding a node)
RUN_BOUND_FACTOR = 4  # a GPU step's deadline allows this many times the estimated work (the rates are rough guesses)
RUN_BOUND_MARGIN_MINUTES = 15.0


@dataclass(frozen=True)
class ModelCost:
    """The estimate for one model."""

    model: str
    gpus: int
    loads: int
    downloaded_gb: float
    load_gpu_minutes: float
    work_gpu_minutes: float

    @property
    def gpu_minutes(self) -> float:
        """GPU minutes of the model: loading it plus the work."""
        return self.load_gpu_minutes + self.work_gpu_minutes


@lru_cache(maxsize=None)
def hub_download_gb_per_minute() -> float:
    """``cost.hub_download_gb_per_minute`` of ``pipeline/models.yaml``."""
    text = (resources.files("pipeline") / "models.yaml").read_text(encoding="utf-8")
    return float(yaml.safe_load(text)["cost"]["hub_download_gb_per_minute"])


def startup_timeout_s(model: ModelSpec) -> float:
    """How long a step waits for the model's server to become healthy: the registry's
    ``startup_timeout_minutes``, else 3 x ``load_minutes`` + a hub download + 5 minutes."""
    if model.startup_timeout_minutes:
        return model.startup_timeout_minutes * 60
    download = model.weights_gb / hub_download_gb_per_minute()
    return (3 * model.load_minutes + download + STARTUP_MARGIN_MINUTES) * 60


def step_deadline_s(model: ModelSpec, rows_by_study: dict[int, int], replications: int, pending_minutes: float) -> int:
    """A GPU step's deadline (Argo template ``timeout``), counted from its pod's creation: ``pending_minutes`` to be
    scheduled, the model's start-up wait, :data:`RUN_BOUND_FACTOR` times the estimated work and a margin. Argo fails a
    step still Pending past it (the bound on Pending time) and stops one still running (a retry resumes its rows)."""
    rows = sum(rows_by_study.values())
    work_minutes = rows * replications / model.answers_per_minute + rows / model.scored_rows_per_minute
    return int(pending_minutes * 60 + startup_timeout_s(model) + (RUN_BOUND_FACTOR * work_minutes + RUN_BOUND_MARGIN_MINUTES) * 60)


def estimate(model: ModelSpec, rows_by_study: dict[int, int], replications: int = 1, layout: Layout = "once",
             cache_warm: bool = False) -> ModelCost:
    """The cost of ``model`` over ``rows_by_study`` (input rows per study) in ``layout``."""
    gpus = model.gpus if model.engine == "vllm" else 0
    download_minutes = model.weights_gb / hub_download_gb_per_minute()
    if layout == "once":
        loads = 1 if rows_by_study else 0
        downloads = 0 if cache_warm else loads
    else:
        loads = downloads = len(SERVED_STAGES) * len(rows_by_study)
    rows = sum(rows_by_study.values())
    work = rows * replications / model.answers_per_minute + rows / model.scored_rows_per_minute
    return ModelCost(model.name, gpus, loads, downloads * model.weights_gb if gpus else 0.0,
                     gpus * (loads * model.load_minutes + downloads * download_minutes), gpus * work)


def format_costs(costs: list[ModelCost], title: str) -> str:
    """A plain-text table (it goes to logs as well as terminals) with a total line."""
    lines = [title, f"  {'model':<32} {'GPUs':>4} {'loads':>5} {'download':>10} {'load GPU-min':>12} {'work GPU-min':>12} {'GPU-min':>8}"]
    for c in costs:
        lines.append(f"  {c.model:<32} {c.gpus:>4} {c.loads:>5} {c.downloaded_gb:>8.1f}GB {c.load_gpu_minutes:>12.0f} "
                     f"{c.work_gpu_minutes:>12.0f} {c.gpu_minutes:>8.0f}")
    total = sum(c.gpu_minutes for c in costs)
    lines.append(f"  {'total':<32} {sum(c.gpus for c in costs):>4} {sum(c.loads for c in costs):>5} "
                 f"{sum(c.downloaded_gb for c in costs):>8.1f}GB {sum(c.load_gpu_minutes for c in costs):>12.0f} "
                 f"{sum(c.work_gpu_minutes for c in costs):>12.0f} {total:>8.0f}  (= {total / 60:.1f} GPU-hours)")
    return "\n".join(lines)
