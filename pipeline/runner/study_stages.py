"""The whole-study and whole-run nodes of the local runner: validation, the analysis-ready merge, the papers' model fits
and the report.

They read the per-model stage tables from the run's store (as a cluster node reads its
artifacts), so they work on any run, including one whose model stages ran earlier.
"""

from __future__ import annotations

import html
import io
import json
from typing import Optional, Sequence

import pandas as pd

from pipeline.layout import COMPARISON_STEM, REPORT_KEY, SUMMARY_KEY, analysis_stem, codebook_key, fit_stems, validation_keys
from pipeline.manifest import code_version
from pipeline.plan import Node
from pipeline.runner.outcome import outcome_lines, run_outcome, write_summary
from schemas.analysis import FACTOR_COLUMNS, analysis_row_model, codebook
from schemas.fits import FitSettings
from schemas.human import ComparisonRow
from schemas.settings import AnalysisSettings
from steps import comparison
from steps.errors import ConfigError, ValidationFailedError
from steps.fit import fit_study, write_fit_tables
from steps.merge import merge_study
from steps.store import Store
from steps.studies import StudySpec
from steps.tables import coerce_to_schema, read_table, write_table
from steps.validate import validate_outputs

FLAG_COLUMNS = ["model_name", "study", "row_index", "replication", "flag", "reason"]


StageTables = tuple[Optional[pd.DataFrame], Optional[pd.DataFrame], Optional[pd.DataFrame]]  # raw, structured, probabilities


def stage_tables(spec: StudySpec, models, stage_files, store: Store) -> dict[str, StageTables]:
    """Model name -> its (raw, structured, probabilities) tables in the run's store, None for a stage that did not
    run; models without any table are left out (validation and merge cover whatever finished)."""
    tables: dict[str, StageTables] = {}
    for name, model in models.items():
        found = tuple(read_table(store, stage_files(stage, spec, model)[1]) for stage in ("query", "extract", "probabilities"))
        if any(t is not None for t in found):
            tables[name] = (found[0], found[1], found[2])
    return tables


def _require_tables(spec: StudySpec, tables: dict, store: Store, stage: str, failed: Sequence[str] = ()) -> None:
    if not tables and failed:
        raise ConfigError(f"{stage} study {spec.number}: no model finished study {spec.number} ({', '.join(failed)} failed or did "
                          "not run: the run's summary says why); re-run (or retry the workflow) once they can")
    if not tables:
        raise ConfigError(f"{stage} study {spec.number}: no model's table of study {spec.number} in {store.uri()}: run query and/or "
                          "probabilities first")


def _csv_bytes(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False, na_rep="NA").encode("utf-8")


def run_validation(spec: StudySpec, input_rows: int, replications: int, tables: dict[str, StageTables], min_confidence: float,
                   store: Store, without_tables: Sequence[str] = ()) -> tuple[int, int, list[str]]:
    """Validate every model's tables; write the JSON result and flagged rows. Raises ValidationFailedError.

    ``without_tables``: models of the run with no Experiment 1 table for this study (their steps failed or did not run):
    listed in the result, not validated (the run's failure is theirs; the report says why). ConfigError when no
    model has a table of this study (nothing to validate is not a pass)."""
    _require_tables(spec, tables, store, "validate", without_tables)
    results = [validate_outputs(model, spec.number, input_rows, replications, raw, structured, probs, min_confidence=min_confidence)
               for model, (raw, structured, probs) in tables.items()]
    report = {
        "study": spec.number, "passed": all(r.passed for r in results), "input_rows": input_rows, "replications": replications,
        "models": {r.model: {"passed": r.passed, "checks": [c.__dict__ for c in r.checks], "flags": len(r.flags)} for r in results},
        "models_without_tables": list(without_tables),
    }
    json_key, flags_key = validation_keys(spec.number)
    store.write_bytes(json_key, json.dumps(report, indent=2).encode("utf-8"))
    store.write_bytes(flags_key, _csv_bytes(pd.DataFrame([f for r in results for f in r.flags], columns=FLAG_COLUMNS)))
    failed = [f"{r.model}: {c.name}: {c.detail}" for r in results for c in r.checks if not c.passed]
    if failed:
        raise ValidationFailedError(f"validation of study {spec.number} failed ({store.uri(json_key)}):\n  " + "\n  ".join(failed))
    return sum(len(r.checks) for r in results), 0, [store.uri(json_key), store.uri(flags_key)]


def run_merge(spec: StudySpec, tables: dict, store: Store) -> list[str]:
    """Write the analysis-ready table and its codebook for one study (ConfigError when no model has a table of it)."""
    _require_tables(spec, tables, store, "merge")
    flags_csv = store.read_bytes(validation_keys(spec.number)[1])
    flags = pd.read_csv(io.BytesIO(flags_csv)) if flags_csv is not None else pd.DataFrame(columns=FLAG_COLUMNS)
    flags = flags[flags["study"] == spec.number] if len(flags) else flags
    row_model = analysis_row_model(spec.number, spec.input_model, spec.probability_summary)
    table = coerce_to_schema(merge_study(tables, flags, row_model, code_version()), row_model)
    for column in FACTOR_COLUMNS:  # Parquet dictionary columns arrive in R as factors
        if column in table:
            table[column] = table[column].astype("category")
    outputs = write_table(table, row_model, store, analysis_stem(spec.number), already_typed=True)
    codebook_at = codebook_key(spec.number)
    store.write_bytes(codebook_at, pd.DataFrame(codebook(row_model)).to_csv(index=False).encode("utf-8"))
    return outputs + [store.uri(codebook_at)]


def run_fits(studies: list[int], run_id: str, store: Store, human: Optional[dict], settings: FitSettings,
             s3_endpoint: Optional[str] = None) -> tuple[list[str], dict[str, float]]:
    """Fit the papers' models to every source of each study with an analysis table or human data; write the parameter and
    prediction tables with their codebooks. Returns where they are and each source's CPU seconds."""
    human = human or {}
    outputs: list[str] = []
    seconds: dict[str, float] = {}
    for study in studies:
        table = read_table(store, analysis_stem(study))
        if table is None and study not in human:
            continue
        tables = fit_study(study, table, human[study].frame if study in human else None, settings, code_version(), run_id,
                           s3_endpoint)
        outputs += write_fit_tables(tables, store, *fit_stems(study))
        seconds.update({f"study {study}: {source}": s for source, s in tables.seconds.items()})
    return outputs, seconds


def read_fits(studies: list[int], store: Store) -> dict[int, tuple[pd.DataFrame, pd.DataFrame]]:
    """Study -> (parameters, predictions) of the fits in the run's store (studies without fits are left out)."""
    found = {}
    for study in studies:
        parameters, predictions = (read_table(store, stem) for stem in fit_stems(study))
        if parameters is not None and predictions is not None:
            found[study] = (parameters, predictions)
    return found


def run_report(studies: list[int], run_id: str, store: Store, human: Optional[dict] = None,
               settings: Optional[AnalysisSettings] = None, status_store: Optional[Store] = None,
               model_nodes: Optional[list[Node]] = None) -> list[str]:
    """Write the long human-vs-model comparison table and ``report.html`` from the run's analysis tables, validation
    results and the validated human data (study -> table), judged with ``settings``; return where they are.

    With ``model_nodes`` (every model node of the run) and ``status_store`` (where their status records are), also the run
    summary (``run_summary.json``): what finished, what failed and why; the report opens with it and it is printed.
    Without them, a ``run_summary.json`` the run already saved is shown again (a report rewritten by ``grace-pipeline fit``)."""
    from steps.report import render_report

    human = human or {}
    settings = settings or AnalysisSettings()
    tables = {n: t for n in studies if (t := read_table(store, analysis_stem(n))) is not None}
    not_finished: list[str] = []
    summary_uri = None
    if model_nodes is not None:
        finished = {n: {str(m) for m in t["model_name"].dropna().unique()} for n, t in tables.items()}
        outcome = run_outcome(status_store or store, model_nodes, finished)
        not_finished = outcome_lines(outcome)
        summary_uri = write_summary(store, outcome)
        for line in not_finished:
            print(f"not finished: {line}", flush=True)
    elif (saved := store.read_bytes(SUMMARY_KEY)) is not None:  # a report rewritten later (grace-pipeline fit) keeps what the run saved
        not_finished = outcome_lines(json.loads(saved))
    validations = {n: json.loads(v) for n in studies if (v := store.read_bytes(validation_keys(n)[0])) is not None}
    rows = [r for n in sorted(set(tables) | set(human))
            for r in comparison.comparison_rows(n, tables.get(n), human[n].frame if n in human else None, settings.study1_exclude)]
    frame = comparison.comparison_frame(rows)
    outputs = write_table(frame, ComparisonRow, store, COMPARISON_STEM)
    comparison_codebook = COMPARISON_STEM + "_codebook.csv"
    store.write_bytes(comparison_codebook, pd.DataFrame(codebook(ComparisonRow)).to_csv(index=False).encode("utf-8"))
    outputs.append(store.uri(comparison_codebook))
    if tables or human:
        page = render_report(tables, validations, run_id, code_version(), human, frame, settings,
                             not_finished=not_finished if model_nodes is not None or not_finished else None,
                             fits=read_fits(studies, store))
    else:  # no model finished any study: the report is what did not finish
        items = "".join(f"<li>{html.escape(line)}</li>" for line in not_finished)
        page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>grace-pipeline report {html.escape(run_id)}</title></head>"
                f"<body><h1>grace-pipeline quality report</h1><p>Run <b>{html.escape(run_id)}</b>: no model finished any study, so "
                f"there is nothing to analyse.</p><h2>Not finished</h2><ul>{items}</ul></body></html>")
    store.write_bytes(REPORT_KEY, page.encode("utf-8"))
    return [store.uri(REPORT_KEY), *outputs, *([summary_uri] if summary_uri else [])]
