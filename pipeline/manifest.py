"""The run manifest: what a run was made of (code, inputs, prompts, models, sampling, servers).

``manifest.json`` in the run's store is rewritten atomically at every invocation; earlier
invocations are kept in its ``invocations`` list. URLs are written without credentials;
no secret is ever part of it.
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Optional

from pipeline.config import RunConfig
from schemas.settings import ModelSpec
from steps.llm_client import redact_url
from steps.store import Store


def code_version() -> str:
    """Package version plus git commit when run from a checkout (``$GRACE_CODE_VERSION`` wins)."""
    if os.environ.get("GRACE_CODE_VERSION"):
        return os.environ["GRACE_CODE_VERSION"]
    try:
        version = metadata.version("grace-pipeline")
    except metadata.PackageNotFoundError:
        version = "unknown"
    try:
        here = Path(__file__).resolve().parent
        commit = subprocess.run(["git", "-C", str(here), "describe", "--always", "--dirty"], capture_output=True, text=True, timeout=5)
        if commit.returncode == 0 and commit.stdout.strip():
            version += f"+git.{commit.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        pass
    return version


def reasoning_split(model: ModelSpec, sidecar: bool) -> Optional[str]:
    """How a reasoning model's trace is split off its answer in a run (the manifest's ``servers.<model>.reasoning_split``):
    by the cluster's vLLM sidecar (``sidecar``) with the registry's ``reasoning_parser``, else by the pipeline at
    ``</think>``. None for a model that is not a reasoning model. Each raw-responses row's ``trace_split`` says how
    its trace was split."""
    if not model.reasoning:
        return None
    if sidecar and model.reasoning_parser:
        return f"server: vLLM --reasoning-parser {model.reasoning_parser} (the trace comes in the reply's reasoning field)"
    return ("client: the text before </think> in the reply (a server that splits traces itself sends them in its reasoning "
            "field, which is used instead)")


def write_manifest(store: Store, key: str, config: RunConfig, run_id: str, inputs, models, servers: dict[str, dict],
                   human: Optional[dict] = None) -> None:
    """Write the manifest (``key``, normally manifest.json) into the run's ``store`` for this invocation.

    ``human``: study -> validated human data table (path, sha256, trials, participants are recorded).
    """
    existing = store.read_bytes(key)
    previous = json.loads(existing) if existing is not None else {}
    config_json = config.model_dump(mode="json")
    config_json["endpoints"] = {m: [redact_url(u) for u in urls] for m, urls in config.endpoints.items()}
    invocation = {
        "started_at": datetime.now(timezone.utc).isoformat(),
        "code_version": code_version(),
        "config": config_json,
        "servers": servers,
    }
    manifest = {
        "run_id": run_id,
        "studies": {
            str(n): {
                "path": table.path, "sha256": table.sha256, "rows": len(table.frame), "name": spec.name,
                "query_template_hash": spec.query_prompt.hash,
                "query_template": {"system": spec.query_prompt.system, "user": spec.query_prompt.user},
                "extraction_template_hash": spec.extraction_prompt.hash,
                "extraction_template": {"system": spec.extraction_prompt.system, "user": spec.extraction_prompt.user},
                "probability_template_hash": spec.probability_hash,
                "probability_questions": [
                    {"name": q.name, "system": q.template.system, "user": q.template.user,
                     "options": q.options, "repeat": q.repeat}
                    for q in spec.probability_questions
                ],
            }
            for n, (spec, table) in inputs.items()
        },
        "human_data": {str(n): {"path": h.path, "sha256": h.sha256, "trials": len(h.frame), "participants": h.participants}
                       for n, h in (human or {}).items()},
        "models": {n: m.model_dump(mode="json") for n, m in models.items()},
        "sampling": config.sampling.model_dump(),
        "invocations": previous.get("invocations", []) + [invocation],
    }
    store.write_bytes(key, json.dumps(manifest, indent=2, ensure_ascii=False).encode("utf-8"))
