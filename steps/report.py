"""The run's quality report: one self-contained HTML file (plots embedded as PNG data URIs).

Sections: validation status; per model x study counts of done / failed / flagged rows and
why; extracted answers per condition (Study 1 by access x observe, Study 2 by goal x
state); Experiment 2 distributions; extraction confidence; timing; and Study 2's
comparison with the human participants (their ``Utterance`` per goal x state beside each
model's Experiment 2 joint distribution and Experiment 1 coded answers, with Jensen-Shannon
divergence and correlation per model). Human answers outside the 8 utterances are counted
and shown, never dropped. Inputs are the analysis tables; nothing here calls a model.
"""

from __future__ import annotations

import base64
import html
import io
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd

from schemas.probabilities import ASSESSMENTS, FRAMES, PERCENT_BINS, STATES
from steps.parse_answers import parse_study2

UTTERANCES = [f"It {'was' if f == 'was' else 'wasn' + chr(39) + 't'} {a}" for f in FRAMES for a in ASSESSMENTS]
JOINT_COLUMNS = [f"prob_{f}_{a}" for f in FRAMES for a in ASSESSMENTS]
GOALS = ["informational", "social", "both"]


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(border=0, classes="t", na_rep="NA", float_format=lambda v: f"{v:.3f}")


def human_choice(utterance: Any) -> str:
    """One of the 8 utterances, or 'other: <text>' for anything else ('It was okay')."""
    text = "" if utterance is None or (not isinstance(utterance, str) and pd.isna(utterance)) else str(utterance)
    parsed = parse_study2(text).values
    return parsed["response_cleaned"] if parsed else f"other: {text.strip() or '(empty)'}"


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence in bits (0 = same, 1 = disjoint) of two distributions."""
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2
    kl = lambda a, b: float(np.sum(np.where(a > 0, a * np.log2(np.where(a > 0, a, 1) / np.where(b > 0, b, 1)), 0.0)))  # noqa: E731
    return (kl(p, m) + kl(q, m)) / 2


def human_comparison(study2: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(human distribution per goal x state, per-model agreement, human answers outside the 8).

    Humans: each input row counted once. Models: Experiment 2 mean joint probability per
    cell, and the share of Experiment 1 coded answers per cell.
    """
    inputs = study2.drop_duplicates("row_index")
    choices = inputs.assign(choice=inputs["Utterance"].map(human_choice))
    outside = choices[~choices.choice.isin(UTTERANCES)].choice.str.removeprefix("other: ").value_counts().rename_axis("human answer").reset_index(name="rows")
    inside = choices[choices.choice.isin(UTTERANCES)]
    human = pd.crosstab([inside.Goal_simplified, inside.State_number], inside.choice).reindex(columns=UTTERANCES, fill_value=0)
    human_p = human.div(human.sum(axis=1), axis=0)
    rows = []
    for model, part in study2.groupby("model_name", observed=True):
        exp2 = part.drop_duplicates("row_index").groupby(["Goal_simplified", "State_number"], observed=True)[JOINT_COLUMNS].mean()
        exp2.columns = UTTERANCES
        coded = part[part.response_cleaned.isin(UTTERANCES)]
        exp1 = pd.crosstab([coded.Goal_simplified, coded.State_number], coded.response_cleaned).reindex(columns=UTTERANCES, fill_value=0)
        exp1 = exp1.div(exp1.sum(axis=1).replace(0, np.nan), axis=0)
        for source, dist in (("Experiment 2 (probabilities)", exp2), ("Experiment 1 (coded answers)", exp1)):
            cells = human_p.index.intersection(dist.dropna().index)
            if len(cells) == 0:
                rows.append({"model": model, "source": source, "cells": 0, "mean JS divergence (bits)": np.nan, "correlation": np.nan})
                continue
            h, m = human_p.loc[cells].to_numpy(float), dist.loc[cells].to_numpy(float)
            jsd = np.mean([js_divergence(a, b) for a, b in zip(h, m)])
            corr = float(np.corrcoef(h.ravel(), m.ravel())[0, 1]) if h.std() > 0 and m.std() > 0 else np.nan
            rows.append({"model": model, "source": source, "cells": len(cells), "mean JS divergence (bits)": jsd, "correlation": corr})
    return human_p, pd.DataFrame(rows), outside


def _human_plot(study2: pd.DataFrame, human_p: pd.DataFrame) -> str:
    import matplotlib.pyplot as plt

    models = list(study2.model_name.astype(str).unique())
    fig, axes = plt.subplots(len(STATES), len(GOALS), figsize=(13, 11), sharey=True, squeeze=False)
    width = 0.8 / (1 + len(models))
    x = np.arange(len(UTTERANCES))
    for i, state in enumerate(STATES):
        for j, goal in enumerate(GOALS):
            ax = axes[i][j]
            if (goal, state) in human_p.index:
                ax.bar(x, human_p.loc[(goal, state)].to_numpy(float), width, label="humans", color="black")
            for k, model in enumerate(models):
                part = study2[(study2.model_name.astype(str) == model) & (study2.Goal_simplified == goal) & (study2.State_number == state)]
                if len(part):
                    ax.bar(x + (k + 1) * width, part.drop_duplicates("row_index")[JOINT_COLUMNS].astype(float).mean().to_numpy(), width, label=model)
            ax.set_title(f"{goal}, {state} hearts", fontsize=9)
            ax.set_xticks(x + width * len(models) / 2, [u.replace("It ", "") for u in UTTERANCES], rotation=60, fontsize=7)
    handles = {label: h for ax in axes.ravel() for h, label in zip(*ax.get_legend_handles_labels())}
    fig.legend(list(handles.values()), list(handles), loc="upper right", fontsize=8)
    fig.subplots_adjust(hspace=1.0)
    fig.suptitle("Study 2: humans' choices vs models' Experiment 2 probabilities, per goal x state")
    return _png(fig)


def _study1_exp2_plot(study1: pd.DataFrame) -> str:
    import matplotlib.pyplot as plt

    models = list(study1.model_name.astype(str).unique())
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 3.6), squeeze=False, sharey=True)
    for ax, model in zip(axes[0], models):
        part = study1[study1.model_name.astype(str) == model].drop_duplicates("row_index")
        for k in STATES:
            ax.plot(PERCENT_BINS, part[[f"state{k}_prob_{p}" for p in PERCENT_BINS]].astype(float).mean().to_numpy(), marker="o", label=f"exactly {k} of 3")
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


def render_report(tables: dict[int, pd.DataFrame], validations: dict[int, dict], run_id: str, code_version: str) -> str:
    """The HTML report for the analysis tables of a run (study number -> table)."""
    import matplotlib

    matplotlib.use("Agg")
    parts = [f"<h1>grace-pipeline quality report</h1><p>Run <b>{html.escape(run_id)}</b>, code {html.escape(code_version)}, "
             f"generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}.</p>"]
    status = [f"<li>Study {n}: {'passed' if v.get('passed') else '<b class=bad>FAILED</b>'}</li>" for n, v in sorted(validations.items())]
    parts.append("<h2>Validation</h2><ul>" + "".join(status) + "</ul>")
    parts.append("<h2>Rows per model and study</h2>" + _table(_counts(tables)))
    if 1 in tables:
        t = tables[1]
        coded = t.assign(knows_yes=t.Knowledge_A.eq("yes").where(t.Knowledge_A.notna()))
        parts.append("<h2>Study 1: extracted answers by access x observe</h2><p>Mean Prior_A and share of 'yes' to the knowledge question (coded answers only).</p>")
        parts.append(_table(coded.groupby(["model_name", "access", "observe"], observed=True).agg(
            rows=("row_index", "size"), mean_Prior_A=("Prior_A", "mean"), share_knows_yes=("knows_yes", "mean"))))
        if "state0_prob_0" in t and t.state0_prob_0.notna().any():
            parts.append("<h2>Study 1: Experiment 2 distributions</h2>" + _study1_exp2_plot(t))
    if 2 in tables:
        t = tables[2]
        parts.append("<h2>Study 2: coded answers (Experiment 1) by goal x state</h2>")
        parts.append(_table(pd.crosstab([t.model_name, t.Goal_simplified, t.State_number], t.response_cleaned.fillna("(not coded)"))))
        human_p, agreement, outside = human_comparison(t)
        parts.append("<h2>Study 2: models compared with the human participants</h2>")
        parts.append("<p>Human choice distribution per goal x state (each input row once):</p>" + _table(human_p))
        parts.append("<p>Agreement per model (JS divergence: 0 = same distribution; correlation over all cells x utterances):</p>" + _table(agreement))
        parts.append("<p>Human answers outside the 8 utterances (not in the distributions above):</p>" + (_table(outside) if len(outside) else "<p>none</p>"))
        if t.prob_was.notna().any():
            parts.append(_human_plot(t, human_p))
    parts.append("<h2>Extraction confidence and timing</h2>" + _confidence_timing_plot(tables))
    style = ("<style>body{font-family:sans-serif;max-width:1300px;margin:2em auto;color:#222}"
             "table.t{border-collapse:collapse;font-size:12px;margin:.5em 0}table.t td,table.t th{padding:2px 8px;border-bottom:1px solid #ddd}"
             ".bad{color:#b00}img{max-width:100%}</style>")
    return f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>grace-pipeline report {html.escape(run_id)}</title>{style}</head><body>{''.join(parts)}</body></html>"


