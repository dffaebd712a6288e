"""The cluster workflow's first step: validate the inputs, fix the run id, and list the fan-out items.

It runs in the steps image (``grace-pipeline cluster-plan``) before any GPU is requested,
so a bad study file fails the workflow in seconds (exit 2, not retried). It writes, into
``out``, the files the WorkflowTemplate reads as output parameters:

- ``run-id``: the given run id, or the one derived from inputs, prompts and sampling
  (the same as a local run's, so re-submitting the same inputs resumes from the checkpoints);
- ``sidecar-items.json``: model x study items whose model is served by a vLLM sidecar;
- ``endpoint-items.json``: items served by an existing endpoint (or the embedded CPU model);
- ``model-items.json``: both (the extraction stage runs for every model x study);
- ``study-items.json``: one item per study; ``models``: the comma-separated model list.

The run's manifest goes to the durable (checkpoint) store.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.config import RunConfig, checkpoint_store
from pipeline.layout import stage_keys
from pipeline.run_setup import load_run_inputs, resolve_models, run_id_for
from pipeline.manifest import write_manifest
from pipeline.registry import model_slug
from schemas.settings import ModelSpec
from steps.studies import StudySpec


def _item(model: ModelSpec, spec: StudySpec, endpoint: str, config: RunConfig) -> dict[str, str]:
    """One fan-out item; every value a string, as Argo substitutes it into arguments. Stems are the artifacts' keys."""
    stems = {f"{stage}_stem": stage_keys(stage, spec, model, config.scoring).stem for stage in ("query", "extract", "probabilities")}
    return {
        "model": model.name, "slug": model_slug(model.name), "study": str(spec.number), "hf_id": model.hf_id,
        "served_name": model.request_model, "dtype": model.dtype, "tp": str(model.tensor_parallel_size),
        "gpus": str(model.gpus), "max_len": str(model.max_model_len), "shm": model.shm_size,
        "node_selector": json.dumps(model.node_selector), "endpoint": endpoint,
        "raw_stem": stems["query_stem"], "structured_stem": stems["extract_stem"], "probabilities_stem": stems["probabilities_stem"],
    }


def cluster_plan(config: RunConfig, out: Path) -> dict[str, object]:
    """Write the plan files into ``out`` (see the module docstring) and return their contents."""
    inputs, human = load_run_inputs(config)
    models = resolve_models(config, require_endpoints=False)
    run_id = run_id_for(config, inputs)
    durable = checkpoint_store(config, run_id)
    durable.check()
    sidecar, endpoint = [], []
    for name, model in models.items():
        url = ",".join(config.endpoints.get(name, ()))
        for study in sorted(inputs):
            (sidecar if model.engine == "vllm" and not url else endpoint).append(_item(model, inputs[study][0], url, config))
    plan = {"run-id": run_id, "sidecar-items.json": sidecar, "endpoint-items.json": endpoint, "model-items.json": sidecar + endpoint,
            "study-items.json": [{"study": str(n)} for n in sorted(inputs)], "models": ",".join(models)}
    out.mkdir(parents=True, exist_ok=True)
    for name, value in plan.items():
        (out / name).write_text(value if isinstance(value, str) else json.dumps(value))
    write_manifest(durable, "manifest.json", config, run_id, inputs, models,
                   {"cluster": {"sidecar_items": len(sidecar), "endpoint_items": len(endpoint)}}, human)
    return plan
