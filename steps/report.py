"""The run's quality report: one self-contained HTML file (plots embedded as PNG data URIs).

Sections: validation status; per model x study counts of done / failed / flagged rows and
why; extracted answers per condition (Study 1 by access x observe, Study 2 by goal x
state); Experiment 2 distributions; Study 1 against Goodman & Stuhlmueller (2013)'s
findings (always); per study, the models beside the human participants when a human data
file was given (``--human1``/``--human2``: per-cell distributions with n and 95% intervals,
agreement with participant-bootstrap intervals, and the probability-against-state figure)
or one line saying there is none; extraction confidence; timing. The study files'
``Utterance`` column is never used: it is not human data. Statistics live in
:mod:`steps.comparison`; nothing here calls a model.
"""

from __future__ import annotations

import base64
import html
import io
from datetime import datetime, timezone
from typing import Optional

import numpy as np
import pandas as pd

from schemas.probabilities import PERCENT_BINS, STATES
from steps import comparison
from steps.human import HumanTable

MAX_MODEL_PANELS = 8  # models drawn in the human-comparison figures (every model is in the tables)


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def _table(frame: pd.DataFrame, index: bool = True) -> str:
    return frame.to_html(border=0, classes="t", na_rep="NA", index=index, float_format=lambda v: f"{v:.3f}")


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
    return _png(fig)


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
    return _png(fig)


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


def _frame(human: Optional[HumanTable]) -> Optional[pd.DataFrame]:
    return human.frame if human is not None else None


def _interval_text(row: pd.Series) -> str:
    if pd.isna(row["value"]):
        return "NA"
    if pd.isna(row["lower"]):
        return f"{row['value']:.3f}"
    return f"{row['value']:.3f} [{row['lower']:.3f}, {row['upper']:.3f}]"


def _side_by_side(rows: pd.DataFrame, measure: str) -> pd.DataFrame:
    """Cell x option rows; columns: humans (n, value [95% interval]) then each model's Experiment 2 and Experiment 1."""
    part = rows[rows.measure == measure]
    if part.empty:
        return part
    part = part.assign(text=part.apply(_interval_text, axis=1),
                       column=[("humans" if s == "human" else f"{m} · {'Exp 2' if e == 'exp2_probabilities' else 'Exp 1 coded'}")
                               for s, m, e in zip(part.source, part.model, part.experiment)])
    wide = part.pivot_table(index=["cell", "option"], columns="column", values="text", aggfunc="first", sort=False)
    counts = part[part.source == "human"].groupby("cell", sort=False).n.first()
    if len(counts):
        wide.insert(0, "humans (n trials)", [counts.get(c) for c, _ in wide.index])
        wide = wide[["humans (n trials)", "humans", *[c for c in wide.columns if c not in ("humans", "humans (n trials)")]]]
    return wide


def _agreement(study: int, table: Optional[pd.DataFrame], human: Optional[pd.DataFrame]) -> pd.DataFrame:
    """Per model x experiment x measure: JS divergence and correlation with the humans, with participant-bootstrap intervals."""
    cells = comparison.STUDY2_CELLS if study == 2 else comparison.STUDY1_CELLS
    rows = []
    for measure in comparison.STUDY_MEASURES[study]:
        people = comparison.human_responses(study, human, measure)
        if people is None or table is None:
            continue
        for model, part in table.groupby("model_name", observed=True, sort=True):
            for experiment in ("exp2_probabilities", "exp1_coded"):
                responses = comparison.model_responses(part, study, measure, experiment)
                if responses is None:
                    continue
                a = comparison.agreement(people, responses, cells)
                rows.append({"model": model, "experiment": experiment, "measure": measure, "cells": a["cells"],
                             "JS divergence (bits)": a["js_divergence"], "JS 95% interval": _pair(a["js_lower"], a["js_upper"]),
                             "correlation": a["correlation"], "correlation 95% interval": _pair(a["corr_lower"], a["corr_upper"])})
    return pd.DataFrame(rows)


def _pair(low: float, high: float) -> str:
    return "NA" if not (np.isfinite(low) and np.isfinite(high)) else f"[{low:.3f}, {high:.3f}]"


SOURCE_STYLES = {None: ("-", "humans"), "exp2_probabilities": ("--", "Exp 2"), "exp1_coded": (":", "Exp 1 coded")}


def _series(rows: pd.DataFrame, model: Optional[str], experiment: Optional[str]) -> pd.DataFrame:
    """The rows of one source: the humans (model None) or one model's experiment."""
    if model is None:
        return rows[rows.source == "human"]
    return rows[(rows.source == "model") & (rows.model == model) & (rows.experiment == experiment)]


def _study2_lines(rows: pd.DataFrame) -> str:
    """Probability of each utterance against the true state: panels per goal x frame ('It was' / 'It wasn't'), one
    row of panels per model; humans solid with their 95% interval, Experiment 2 dashed, Experiment 1 dotted."""
    import matplotlib.pyplot as plt

    part = rows[rows.measure == "utterance"]
    models = list(dict.fromkeys(part.model.dropna()))[:MAX_MODEL_PANELS] or [None]
    columns = [(goal, frame) for frame in ("It was", "It wasn't") for goal in comparison.GOALS]
    fig, axes = plt.subplots(len(models), len(columns), figsize=(2.4 * len(columns), 2.5 * len(models)), sharey=True, squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, model in enumerate(models):
        for j, (goal, frame) in enumerate(columns):
            ax = axes[i][j]
            for k, option in enumerate(u for u in comparison.UTTERANCES if u.startswith(frame + " ")):
                for source_model, experiment in [(None, None)] + ([(model, "exp2_probabilities"), (model, "exp1_coded")] if model else []):
                    sel = _series(part, source_model, experiment)
                    sel = sel[(sel.goal == goal) & (sel.option == option)].sort_values("state")
                    if sel.empty:
                        continue
                    style, what = SOURCE_STYLES[experiment]
                    ax.plot(sel.state.astype(float), sel.value.astype(float), style, color=colours[k], marker="o", markersize=3,
                            label=f"{option.split()[-1]} ({what})")
                    if source_model is None and sel.lower.notna().all():
                        ax.fill_between(sel.state.astype(float), sel.lower.astype(float), sel.upper.astype(float), color=colours[k],
                                        alpha=0.15)
            ax.set_title(f"{goal}: {frame} ...", fontsize=8)
            ax.set_xticks(list(STATES))
            ax.tick_params(labelsize=7)
        axes[i][0].set_ylabel(model or "humans", fontsize=8)
        axes[-1][0].set_xlabel("true state (hearts)", fontsize=8)
    return _finish(fig, axes, "Study 2: probability of each utterance against the true state, per goal")


def _study1_lines(rows: pd.DataFrame) -> str:
    """Normalised belief in exactly k of 3 against k, one panel per access x observe and one row per model; humans solid
    (black, 95% interval), Experiment 2 dashed, Experiment 1 dotted."""
    import matplotlib.pyplot as plt

    part = rows[rows.measure == "bet"]
    models = list(dict.fromkeys(part.model.dropna()))[:MAX_MODEL_PANELS] or [None]
    cells = [comparison.cell_label(1, c) for c in comparison.STUDY1_CELLS]
    fig, axes = plt.subplots(len(models), len(cells), figsize=(1.9 * len(cells), 2.3 * len(models)), sharey=True, squeeze=False)
    colours = {None: "black", "exp2_probabilities": "tab:blue", "exp1_coded": "tab:orange"}
    for i, model in enumerate(models):
        for j, cell in enumerate(cells):
            ax = axes[i][j]
            for source_model, experiment in [(None, None)] + ([(model, "exp2_probabilities"), (model, "exp1_coded")] if model else []):
                sel = _series(part, source_model, experiment)
                sel = sel[sel.cell == cell]
                if sel.empty:
                    continue
                sel = sel.assign(k=sel.option.astype(int)).sort_values("k")
                style, what = SOURCE_STYLES[experiment]
                ax.plot(sel.k, sel.value.astype(float), style, color=colours[experiment], marker="o", markersize=3, label=what)
                if source_model is None and sel.lower.notna().all():
                    ax.fill_between(sel.k, sel.lower.astype(float), sel.upper.astype(float), color="black", alpha=0.12)
            ax.set_title(cell, fontsize=7)
            ax.set_xticks(list(STATES))
            ax.tick_params(labelsize=7)
        axes[i][0].set_ylabel(model or "humans", fontsize=8)
        axes[-1][0].set_xlabel("exactly k of 3", fontsize=8)
    return _finish(fig, axes, "Study 1: belief in exactly k of 3 items, per access x observe")


def _finish(fig, axes, title: str) -> str:
    handles = {label: h for ax in axes.ravel() for h, label in zip(*ax.get_legend_handles_labels())}
    fig.legend(list(handles.values()), list(handles), loc="center right", fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.05, right=0.86, top=0.92, bottom=0.08, hspace=0.45, wspace=0.12)
    return _png(fig)


def _findings_section(table: Optional[pd.DataFrame], human: Optional[pd.DataFrame]) -> str:
    """Goodman & Stuhlmueller (2013)'s comparisons tested on every source's bets."""
    sources = {}
    people = comparison.human_responses(1, human, "bet")
    if people is not None:
        sources["humans"] = people
    if table is not None:
        for model, part in table.groupby("model_name", observed=True, sort=True):
            for experiment, label in (("exp1_coded", "Exp 1 coded bets"), ("exp2_probabilities", "Exp 2 probabilities")):
                bets = comparison.model_responses(part, 1, "bet", experiment)
                if bets is not None:
                    sources[f"{model} · {label}"] = bets
    intro = ("<h2>Study 1: the paper's findings (Goodman &amp; Stuhlmueller 2013)</h2><p>With full access, listeners bet more on "
             "exactly the stated number than on more (an upper-bounded reading); with partial access that reading weakens or "
             "disappears. Each comparison is tested on each source's normalised bets, paired over trials (Experiment 2: one "
             f"trial per distinct prompt): mean difference with a 95% bootstrap interval and a one-sided sign-flip p-value; "
             f"'reproduced' means the difference is greater (p &lt; {comparison.ALPHA}) where the paper found it greater, and "
             "not greater where the paper found it no longer greater.</p>")
    if not sources:
        return intro + "<p>No bets to test: run extraction or Experiment 2, or give human bets with --human1.</p>"
    table = comparison.findings_table(sources)
    table["p_one_sided"] = [("NA" if pd.isna(p) else "< 0.001" if p < 0.001 else f"{p:.3f}") for p in table.p_one_sided]
    return intro + _table(table, index=False)


def _human_section(study: int, table: Optional[pd.DataFrame], human, rows: pd.DataFrame) -> str:
    """Models beside the human participants (or the models alone, said in one line, without human data)."""
    flag = f"--human{study}"
    what = "speaker production (Yoon, Tessler, Goodman &amp; Frank 2020 format)" if study == 2 else "listener judgements"
    parts = [f"<h2>Study {study}: models compared with human participants</h2>"]
    if human is None:
        parts.append(f"<p>No human data given ({flag}): the models are shown alone.</p>")
    else:
        parts.append(f"<p>Human {what}: {html.escape(human.path)} (sha256 {human.sha256[:12]}), {len(human.frame)} trials from "
                     f"{human.participants} participants. Intervals: {html.escape(comparison.BETA_METHOD)} for proportions, "
                     f"{html.escape(comparison.PARTICIPANT_BOOT)} for mean bets.</p>")
        agreement = _agreement(study, table, human.frame)
        if len(agreement):
            parts.append("<p>Agreement per model (mean Jensen-Shannon divergence over cells, 0 = same distribution; Pearson "
                         "correlation over cells x options; 95% intervals by resampling participants):</p>"
                         + _table(agreement, index=False))
    for measure in comparison.STUDY_MEASURES[study]:
        wide = _side_by_side(rows, measure)
        if len(wide):
            label = {"utterance": "utterance choice per goal x state", "bet": "normalised bet on exactly k of 3 per access x observe",
                     "prior": "prior answer (0-3) per access x observe",
                     "knowledge": "'does the speaker know' per access x observe"}[measure]
            parts.append(f"<h3>Study {study}: {label}</h3>" + _table(wide))
    if (rows.measure == ("utterance" if study == 2 else "bet")).any():
        parts.append(_study2_lines(rows) if study == 2 else _study1_lines(rows))
    return "".join(parts)


def render_report(tables: dict[int, pd.DataFrame], validations: dict[int, dict], run_id: str, code_version: str,
                  human: Optional[dict[int, HumanTable]] = None, comparison_table: Optional[pd.DataFrame] = None,
                  not_finished: Optional[list[str]] = None) -> str:
    """The HTML report for the analysis tables of a run (study number -> table), with the human data files given
    (study -> table) and the long comparison table (computed here when not given). ``not_finished``: what of the run did
    not finish, and why (one line each; the report then covers the models that finished and says so first)."""
    import matplotlib

    matplotlib.use("Agg")
    parts = [f"<h1>grace-pipeline quality report</h1><p>Run <b>{html.escape(run_id)}</b>, code {html.escape(code_version)}, "
             f"generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}.</p>"]
    if not_finished:
        parts.append("<h2 class=bad>Not finished</h2><p>This report and the analysis tables cover the models that finished; "
                     "the run failed for:</p><ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in not_finished) + "</ul>")
    elif not_finished is not None:
        parts.append("<p>Every model of the run finished.</p>")
    status = [f"<li>Study {n}: {'passed' if v.get('passed') else '<b class=bad>FAILED</b>'}</li>" for n, v in sorted(validations.items())]
    parts.append("<h2>Validation</h2><ul>" + "".join(status) + "</ul>")
    parts.append("<h2>Rows per model and study</h2>" + _table(_counts(tables)))
    if 1 in tables:
        t = tables[1]
        coded = t.assign(knows_yes=t.Knowledge_A.eq("yes").where(t.Knowledge_A.notna()))
        parts.append("<h2>Study 1: extracted answers by access x observe</h2>"
                     "<p>Mean Prior_A and share of 'yes' to the knowledge question (coded answers only).</p>")
        parts.append(_table(coded.groupby(["model_name", "access", "observe"], observed=True).agg(
            rows=("row_index", "size"), mean_Prior_A=("Prior_A", "mean"), share_knows_yes=("knows_yes", "mean"))))
        if "state0_prob_0" in t and t.state0_prob_0.notna().any():
            parts.append("<h2>Study 1: Experiment 2 distributions</h2>" + _study1_exp2_plot(t))
    if 2 in tables:
        t = tables[2]
        parts.append("<h2>Study 2: coded answers (Experiment 1) by goal x state</h2>")
        parts.append(_table(pd.crosstab([t.model_name, t.Goal_simplified, t.State_number], t.response_cleaned.fillna("(not coded)"))))
    human = human or {}
    if comparison_table is None:
        comparison_table = comparison.comparison_frame(
            [r for n in sorted(set(tables) | set(human)) for r in comparison.comparison_rows(n, tables.get(n), _frame(human.get(n)))])
    if 1 in tables or 1 in human:
        parts.append(_findings_section(tables.get(1), _frame(human.get(1))))
    for study in sorted(set(tables) | set(human)):
        parts.append(_human_section(study, tables.get(study), human.get(study), comparison_table[comparison_table.study == study]))
    parts.append("<h2>Extraction confidence and timing</h2>" + _confidence_timing_plot(tables))
    style = ("<style>body{font-family:sans-serif;max-width:1300px;margin:2em auto;color:#222}"
             "table.t{border-collapse:collapse;font-size:12px;margin:.5em 0}"
             "table.t td,table.t th{padding:2px 8px;border-bottom:1px solid #ddd}"
             ".bad{color:#b00}img{max-width:100%}</style>")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>grace-pipeline report {html.escape(run_id)}</title>{style}</head>"
            f"<body>{''.join(parts)}</body></html>")


