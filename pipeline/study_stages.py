"""The whole-study nodes of the local runner: validation and the analysis-ready merge.

They read the per-model stage tables from the run folder (as a cluster node reads its
artifacts), so they work on any run, including one whose model stages ran earlier.
"""

from __future__ import annotations

import json
from pathlib import Path
import pandas as pd

from pipeline.manifest import code_version
from schemas.analysis import FACTOR_COLUMNS, analysis_row_model, codebook
from steps.errors import ValidationFailedError
from steps.merge import merge_study
from steps.studies import StudySpec
from steps.tables import coerce_to_schema, read_table, write_table
from steps.validate import validate_outputs

FLAG_COLUMNS = ["model_name", "study", "row_index", "replication", "flag", "reason"]


def stage_tables(spec: StudySpec, models, stage_files, path: Path) -> dict[str, tuple]:
    """Model name -> (raw, structured, probabilities) tables that exist in the run folder."""
    tables = {}
    for name, model in models.items():
        raw, structured, probs = (read_table(stage_files(stage, spec, model, path)[1]) for stage in ("query", "extract", "probabilities"))
        if raw is not None:
            tables[name] = (raw, structured, probs)
    return tables


def run_validation(spec: StudySpec, input_rows: int, replications: int, tables: dict, min_confidence: float, path: Path) -> tuple[int, int, list[Path]]:
    """Validate every model's tables; write the JSON result and flagged rows. Raises ValidationFailedError."""
    results = [validate_outputs(model, spec.number, input_rows, replications, *t, min_confidence=min_confidence)
               for model, t in tables.items()]
    out = path / "validation"
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "study": spec.number, "passed": all(r.passed for r in results), "input_rows": input_rows, "replications": replications,
        "models": {r.model: {"passed": r.passed, "checks": [c.__dict__ for c in r.checks], "flags": len(r.flags)} for r in results},
    }
    json_path, flags_path = out / f"study{spec.number}_validation.json", out / f"study{spec.number}_flagged_rows.csv"
    json_path.write_text(json.dumps(report, indent=2))
    pd.DataFrame([f for r in results for f in r.flags], columns=FLAG_COLUMNS).to_csv(flags_path, index=False, na_rep="NA")
    failed = [f"{r.model}: {c.name}: {c.detail}" for r in results for c in r.checks if not c.passed]
    if failed:
        raise ValidationFailedError(f"validation of study {spec.number} failed ({json_path}):\n  " + "\n  ".join(failed))
    return sum(len(r.checks) for r in results), 0, [json_path, flags_path]


def run_merge(spec: StudySpec, tables: dict, path: Path) -> list[Path]:
    """Write the analysis-ready table and its codebook for one study."""
    flags_path = path / "validation" / f"study{spec.number}_flagged_rows.csv"
    flags = pd.read_csv(flags_path) if flags_path.exists() else pd.DataFrame(columns=FLAG_COLUMNS)
    flags = flags[flags["study"] == spec.number] if len(flags) else flags
    row_model = analysis_row_model(spec.number, spec.input_model, spec.probability_summary)
    table = coerce_to_schema(merge_study(tables, flags, row_model, code_version()), row_model)
    for column in FACTOR_COLUMNS:  # Parquet dictionary columns arrive in R as factors
        if column in table:
            table[column] = table[column].astype("category")
    stem = path / "analysis" / f"study{spec.number}_analysis"
    outputs = list(write_table(table, row_model, stem, already_typed=True))
    codebook_path = path / "analysis" / f"study{spec.number}_codebook.csv"
    pd.DataFrame(codebook(row_model)).to_csv(codebook_path, index=False)
    return outputs + [codebook_path]


def run_report(studies: list[int], run_id: str, path: Path) -> Path:
    """Render ``report.html`` from the run's analysis tables and validation results."""
    from steps.report import render_report

    tables = {n: pd.read_parquet(p) for n in studies if (p := path / "analysis" / f"study{n}_analysis.parquet").exists()}
    validations = {n: json.loads(p.read_text()) for n in studies if (p := path / "validation" / f"study{n}_validation.json").exists()}
    report = path / "report.html"
    tmp = report.with_suffix(".html.tmp")
    tmp.write_text(render_report(tables, validations, run_id, code_version()), encoding="utf-8")
    tmp.replace(report)
    return report
