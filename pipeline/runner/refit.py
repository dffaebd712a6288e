"""``grace-pipeline fit``: the papers' models fitted (again) to a finished run, without calling any model.

Reads the run's analysis tables (and the human data files: the ones given, else those its manifest records, when they
are still there unchanged), writes ``fits/`` and, when the run has a report, rewrites ``report.html`` so that it shows
the new fits, its findings judged as the run judged them (the analysis settings its manifest records). Every input is
checked before any fitting; the run's ``fit`` and ``report`` nodes are held while it works (:mod:`steps.run_lock`), so it
never races a run writing the same files.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Optional

from pydantic import ValidationError

from pipeline.layout import REPORT_KEY, analysis_stem
from pipeline.runner.study_stages import run_fits, run_report
from schemas.fits import FitSettings
from schemas.settings import AnalysisSettings
from steps.errors import ConfigError
from steps.human import HUMAN_FORMATS, HumanTable, load_human_table
from steps.rsa_polite import load_literal_semantics
from steps.run_lock import RunLock
from steps.store import Store, read_url
from steps.studies import available_studies


@dataclass
class RefitResult:
    """What ``grace-pipeline fit`` did: the run, the studies fitted, where the outputs are, CPU seconds per source, notes."""

    run_id: str
    studies: list[int]
    outputs: list[str]
    seconds: dict[str, float]
    notes: list[str] = field(default_factory=list)


def _manifest(store: Store) -> dict:
    data = store.read_bytes("manifest.json")
    return json.loads(data) if data is not None else {}


def _recorded_human(manifest: dict, study: int, s3_endpoint: Optional[str], notes: list[str]) -> Optional[str]:
    """The human file the run used for ``study``, when it is still readable and unchanged (same sha256)."""
    entry = manifest.get("human_data", {}).get(str(study))
    if not entry:
        return None
    try:
        data = read_url(entry["path"], s3_endpoint)
    except (OSError, ValueError):
        data = None
    if data is None or hashlib.sha256(data).hexdigest() != entry.get("sha256"):
        notes.append(f"the run's human data for study {study} ({entry['path']}) is gone or changed: fitted without it "
                     f"(give --human{study} FILE)")
        return None
    notes.append(f"human data for study {study}: {entry['path']} (as recorded in the run's manifest)")
    return entry["path"]


def _recorded_analysis(manifest: dict, notes: list[str]) -> AnalysisSettings:
    """How the run's last invocation judged the findings (alpha, margin, exclusions); the defaults when none is recorded."""
    for invocation in reversed(manifest.get("invocations", [])):
        recorded = (invocation.get("config") or {}).get("analysis")
        if recorded is not None:
            try:
                return AnalysisSettings.model_validate(recorded)
            except ValidationError:
                break
    notes.append("the run's manifest records no usable analysis settings: the report's findings use the defaults")
    return AnalysisSettings()


def refit(store: Store, settings: FitSettings, human_paths: dict[int, str], studies: Optional[list[int]] = None,
          s3_endpoint: Optional[str] = None, report: bool = True, lock_wait_s: float = 0.0) -> RefitResult:
    """Fit the papers' models to the finished run in ``store`` (the run's own folder) and rewrite its report."""
    manifest = _manifest(store)
    run_id = manifest.get("run_id") or store.uri().rstrip("/").rsplit("/", 1)[-1]
    with_tables = [n for n in available_studies() if store.exists(analysis_stem(n) + ".parquet")]
    chosen = studies or with_tables
    if not with_tables:
        raise ConfigError(f"{store.uri()} has no analysis tables (analysis/study<n>_analysis.parquet): give the folder of a "
                          "finished run, e.g. grace-output/run-1234abcd, after its merge stage")
    missing = [n for n in chosen if n not in with_tables]
    if missing:
        raise ConfigError(f"{store.uri()} has no analysis table for study {missing[0]} (it has {with_tables}); run its merge "
                          "stage first or leave it out of --studies")
    unknown = [n for n in human_paths if n not in chosen]
    if unknown:
        raise ConfigError(f"--human{unknown[0]} was given but study {unknown[0]} is not fitted (--studies {','.join(map(str, chosen))})")
    notes: list[str] = []
    paths = {n: human_paths.get(n) or _recorded_human(manifest, n, s3_endpoint, notes) for n in chosen if n in HUMAN_FORMATS}
    human: dict[int, HumanTable] = {n: load_human_table(n, p, s3_endpoint=s3_endpoint) for n, p in paths.items() if p}
    if 2 in chosen:
        load_literal_semantics(settings.semantics, s3_endpoint)  # a bad norming file is refused before any fitting
    with RunLock(store, ["fit", "report"], wait_s=lock_wait_s, what="grace-pipeline fit"):
        outputs, seconds = run_fits(chosen, run_id, store, human, settings, s3_endpoint)
        if report and store.exists(REPORT_KEY):
            outputs = run_report(with_tables, run_id, store, human, settings=_recorded_analysis(manifest, notes)) + outputs
    return RefitResult(run_id, chosen, outputs, seconds, notes)
