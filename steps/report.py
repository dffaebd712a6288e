"""The run's quality report: one self-contained HTML file (plots embedded as PNG data URIs).

The page is the sections of :data:`SECTIONS` in order, each a function ``(ReportContext) -> str``
(:mod:`steps.report_context`): adding a section is one line there. Sections: run header;
validation status; per model x study counts of done / failed / flagged rows and why; extracted
answers per condition (Study 1 by access x observe, Study 2 by goal x state); Experiment 2
distributions; the papers' findings tested on every source (Study 1: Goodman & Stuhlmueller
2013, Study 2: Yoon et al. 2020; :mod:`steps.report_findings`); per study, the models beside
the human participants when a human data file was given (``--human1``/``--human2``: per-cell
distributions with units and 95% intervals, agreement with its yardsticks, and the figures)
or one line saying there is none; extraction confidence; timing. The study files'
``Utterance`` column is never used: it is not human data. Nothing here calls a model.
"""

from __future__ import annotations

import html
from datetime import datetime, timezone
from typing import Callable, Optional

import numpy as np
import pandas as pd

from schemas.probabilities import PERCENT_BINS, STATES
from schemas.settings import AnalysisSettings
from steps import comparison, report_figures
from steps.human import HumanTable
from steps.report_context import ReportContext, html_table, png
from steps.report_findings import agreement_html, study1_findings_section, study2_findings_section
from steps.report_fits import fits_report_section
from steps.responses import STUDY_MEASURES, plural

_table = html_table


def _study1_exp2_plot(study1: pd.DataFrame) -> str:
    import matplotlib.pyplot as plt

    models = list(study1.model_name.astype(str).unique())
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 3.6), squeeze=False, sharey=True)
    for ax, model in zip(axes[0], models):
        part = study1[study1.model_name.astype(str) == model].drop_duplicates("row_index")
        for k in STATES:
            ax.plot(PERCENT_BINS, part[[f"state{k}_prob_{p}" for p in PERCENT_BINS]].astype(float).mean().to_numpy(), marker="o",
                    label=f"exactly {k} of 3")
        ax.set_title(model, fontsize=10)
        ax.set_xlabel("answer (%)")
    axes[0][0].set_ylabel("mean probability")
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Study 1, Experiment 2: mean probability of each percentage answer, per state")
    return png(fig)


def _confidence_timing_plot(tables: dict[int, pd.DataFrame]) -> str:
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 3.6))
    labels, confidences, times = [], [], []
    for study, table in tables.items():
        for model, part in table.groupby("model_name", observed=True):
            labels.append(f"{model}\nstudy {study}")
            confidences.append(part.extraction_confidence.dropna().astype(float).to_numpy())
            times.append(part.processing_time_ms.dropna().astype(float).to_numpy() / 1000)
    left.boxplot([c if len(c) else [np.nan] for c in confidences], tick_labels=labels)
    left.set_title("extraction confidence")
    right.boxplot([t if len(t) else [np.nan] for t in times], tick_labels=labels)
    right.set_title("Experiment 1 latency per row (s)")
    for ax in (left, right):
        ax.tick_params(axis="x", labelsize=7)
    return png(fig)


def _counts(tables: dict[int, pd.DataFrame]) -> pd.DataFrame:
    rows = []
    for study, t in tables.items():
        for model, part in t.groupby("model_name", observed=True):
            flags = part.review_flags.dropna().str.split("; ").explode().value_counts()
            rows.append({
                "study": study, "model": model, "rows": len(part),
                "query ok": int((part.query_status == "ok").sum()), "query failed": int((part.query_status == "failed").sum()),
                **{f"extraction {s}": int((part.extraction_status == s).sum()) for s in ("ok", "partial", "not_found", "failed")},
                "probabilities failed": int(part.drop_duplicates("row_index").probability_status.eq("failed").sum()),
                "flagged rows": int(part.review_flags.notna().sum()),
                "flags": ", ".join(f"{k}: {v}" for k, v in flags.items()) or "-",
            })
    return pd.DataFrame(rows)




def _interval_text(row: pd.Series) -> str:
    if pd.isna(row["value"]):
        return "NA"
    bounds = "" if pd.isna(row["lower"]) else f" [{row['lower']:.3f}, {row['upper']:.3f}]"
    return f"{row['value']:.3f}{bounds} n={int(row['n'])}"


def _side_by_side(rows: pd.DataFrame, measure: str) -> pd.DataFrame:
    """Cell x option rows; columns: humans then each model's Experiment 2 and Experiment 1: value [95% interval] n=units."""
    part = rows[rows.measure == measure]
    if part.empty:
        return part
    labels = [(f"humans (n = {plural(u)})" if s == "human"
               else f"{m} · {'Exp 2' if e == 'exp2_probabilities' else 'Exp 1 coded'} (n = {plural(u)})")
              for s, m, e, u in zip(part.source, part.model, part.experiment, part.unit)]
    part = part.assign(text=part.apply(_interval_text, axis=1), column=labels)
    return part.pivot_table(index=["cell", "option"], columns="column", values="text", aggfunc="first", sort=False)


def _header(ctx: ReportContext) -> str:
    return (f"<h1>grace-pipeline quality report</h1><p>Run <b>{html.escape(ctx.run_id)}</b>, code {html.escape(ctx.code_version)}, "
            f"generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}. Findings: &alpha; = {ctx.settings.alpha:g} per source, "
            f"equivalence margin {ctx.settings.equivalence_margin:g}, Study 1 exclusions: "
            f"{', '.join(ctx.settings.study1_exclude) or 'none'}.</p>")


def _validation(ctx: ReportContext) -> str:
    status = [f"<li>Study {n}: {'passed' if v.get('passed') else '<b class=bad>FAILED</b>'}</li>"
              for n, v in sorted(ctx.validations.items())]
    return "<h2>Validation</h2><ul>" + "".join(status) + "</ul>" + "<h2>Rows per model and study</h2>" + _table(_counts(ctx.tables))


def _study1_answers(ctx: ReportContext) -> str:
    if 1 not in ctx.tables:
        return ""
    t = ctx.tables[1]
    coded = t.assign(knows_yes=t.Knowledge_A.eq("yes").where(t.Knowledge_A.notna()))
    out = ("<h2>Study 1: extracted answers by access x observe</h2><p>Mean Prior_A and share of 'yes' to the knowledge question "
           "(coded answers only; rows = coded answers, not independent units).</p>"
           + _table(coded.groupby(["model_name", "access", "observe"], observed=True).agg(
               rows=("row_index", "size"), mean_Prior_A=("Prior_A", "mean"), share_knows_yes=("knows_yes", "mean"))))
    if "state0_prob_0" in t and t.state0_prob_0.notna().any():
        out += "<h2>Study 1: Experiment 2 distributions</h2>" + _study1_exp2_plot(t)
    return out


def _study2_answers(ctx: ReportContext) -> str:
    if 2 not in ctx.tables:
        return ""
    t = ctx.tables[2]
    counts = pd.crosstab([t.model_name, t.Goal_simplified, t.State_number], t.response_cleaned.fillna("(not coded)"))
    return ("<h2>Study 2: coded answers (Experiment 1) by goal x state</h2><p>Counts of coded answers (rows, not independent "
            "units).</p>" + _table(counts))


def _human_section(ctx: ReportContext, study: int) -> str:
    """Models beside the human participants (or the models alone, said in one line, without human data)."""
    human: Optional[HumanTable] = ctx.human.get(study)
    table = ctx.comparison if ctx.comparison is not None else comparison.comparison_frame([])
    rows = table[table.study == study]
    flag = f"--human{study}"
    what = "speaker production (Yoon, Tessler, Goodman &amp; Frank 2020 format)" if study == 2 else "listener judgements"
    parts = [f"<h2>Study {study}: models compared with human participants</h2>"]
    if human is None:
        parts.append(f"<p>No human data given ({flag}): the models are shown alone.</p>")
    else:
        parts.append(f"<p>Human {what}: {html.escape(human.path)} (sha256 {human.sha256[:12]}), {len(human.frame)} trials from "
                     f"{human.participants} participants. Intervals: {html.escape(comparison.JEFFREYS_METHOD)} for human "
                     "proportions; bootstrap over participants for human mean bets; bootstrap over items for models (each "
                     "item's answers averaged first). n counts those units.</p>")
        parts.append(agreement_html(ctx, study))
        if len(rows):
            parts.append(report_figures.scatter(rows, study))
    for measure in STUDY_MEASURES[study]:
        wide = _side_by_side(rows, measure)
        if len(wide):
            label = {"utterance": "utterance choice per goal x state", "bet": "normalised bet on exactly k of 3 per access x observe",
                     "prior": "prior answer (0-3) per access x observe",
                     "knowledge": "'does the speaker know' per access x observe"}[measure]
            parts.append(f"<h3>Study {study}: {label}</h3>" + _table(wide))
    if (rows.measure == ("utterance" if study == 2 else "bet")).any():
        parts.append(report_figures.study2_lines(rows) if study == 2 else report_figures.study1_lines(rows))
    return "".join(parts)


def _human_sections(ctx: ReportContext) -> str:
    return "".join(_human_section(ctx, study) for study in ctx.studies)


def _confidence_timing(ctx: ReportContext) -> str:
    return "<h2>Extraction confidence and timing</h2>" + _confidence_timing_plot(ctx.tables)


Section = Callable[[ReportContext], str]
SECTIONS: list[Section] = [
    _header,
    _validation,
    _study1_answers,
    _study2_answers,
    study1_findings_section,
    study2_findings_section,
    _human_sections,
    fits_report_section,  # the papers' models fitted to every source (steps/report_fits.py)
    _confidence_timing,
]
STYLE = ("<style>body{font-family:sans-serif;max-width:1300px;margin:2em auto;color:#222}"
         "table.t{border-collapse:collapse;font-size:12px;margin:.5em 0}"
         "table.t td,table.t th{padding:2px 8px;border-bottom:1px solid #ddd;vertical-align:top}"
         ".bad{color:#b00}.ok{color:#070;font-weight:bold}.mid{color:#a60}img{max-width:100%}</style>")


def _not_finished(lines: Optional[list[str]]) -> str:
    """What of the run did not finish, and why (None: not known, nothing said)."""
    if lines is None:
        return ""
    if not lines:
        return "<p>Every model of the run finished.</p>"
    return ("<h2 class=bad>Not finished</h2><p>This report and the analysis tables cover the models that finished; the run failed "
            "for:</p><ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in lines) + "</ul>")


def render_report(tables: dict[int, pd.DataFrame], validations: dict[int, dict], run_id: str, code_version: str,
                  human: Optional[dict[int, HumanTable]] = None, comparison_table: Optional[pd.DataFrame] = None,
                  settings: Optional[AnalysisSettings] = None, not_finished: Optional[list[str]] = None,
                  fits: Optional[dict[int, tuple[pd.DataFrame, pd.DataFrame]]] = None) -> str:
    """The HTML report for the analysis tables of a run (study number -> table), with the human data files given
    (study -> table), the long comparison table (computed here when not given) and the analysis settings.
    ``not_finished``: what of the run did not finish, and why (one line each): said right after the header.
    ``fits``: study -> the papers' model fit tables (parameters, predictions)."""
    import matplotlib

    matplotlib.use("Agg")
    settings = settings or AnalysisSettings()
    human = human or {}
    ctx = ReportContext(tables, validations, run_id, code_version, human, comparison_table, settings, fits=fits or {})
    if ctx.comparison is None:
        ctx.comparison = comparison.comparison_frame(
            [r for n in ctx.studies for r in comparison.comparison_rows(n, tables.get(n), ctx.human_frame(n), settings.study1_exclude)])
    parts = [section(ctx) for section in SECTIONS]
    body = parts[0] + _not_finished(not_finished) + "".join(parts[1:])  # after the header (SECTIONS[0])
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>grace-pipeline report {html.escape(run_id)}</title>{STYLE}"
            f"</head><body>{body}</body></html>")
