"""The report's figures: what people in this field read, drawn from the long comparison table and the findings.

- :func:`study2_lines` / :func:`study1_lines`: each option against the true state (Study 2) or
  each bet against k (Study 1), humans solid with their 95% band, models dashed (Exp 2) and
  dotted (Exp 1);
- :func:`scatter`: every model's value against the humans' over cells x options, identity line,
  coloured by goal (Study 2) or access (Study 1);
- :func:`per_item_effects`: Study 1's findings per unit (each story, or each participant),
  with the mean and its 95% interval, per source.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd

from schemas.probabilities import STATES
from steps.comparison import cell_label
from steps.findings import Contrast, SourceResult
from steps.report_context import png
from steps.responses import GOALS, STUDY1_CELLS, UTTERANCES

MAX_MODEL_PANELS = 8  # models drawn in the human-comparison figures (every model is in the tables)


SOURCE_STYLES = {None: ("-", "humans"), "exp2_probabilities": ("--", "Exp 2"), "exp1_coded": (":", "Exp 1 coded")}


def _series(rows: pd.DataFrame, model: Optional[str], experiment: Optional[str]) -> pd.DataFrame:
    """The rows of one source: the humans (model None) or one model's experiment."""
    if model is None:
        return rows[rows.source == "human"]
    return rows[(rows.source == "model") & (rows.model == model) & (rows.experiment == experiment)]


def study2_lines(rows: pd.DataFrame) -> str:
    """Probability of each utterance against the true state: panels per goal x frame ('It was' / 'It wasn't'), one
    row of panels per model; humans solid with their 95% interval, Experiment 2 dashed, Experiment 1 dotted."""
    import matplotlib.pyplot as plt

    part = rows[rows.measure == "utterance"]
    models = list(dict.fromkeys(part.model.dropna()))[:MAX_MODEL_PANELS] or [None]
    columns = [(goal, frame) for frame in ("It was", "It wasn't") for goal in GOALS]
    fig, axes = plt.subplots(len(models), len(columns), figsize=(2.4 * len(columns), 2.5 * len(models)), sharey=True, squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, model in enumerate(models):
        for j, (goal, frame) in enumerate(columns):
            ax = axes[i][j]
            for k, option in enumerate(u for u in UTTERANCES if u.startswith(frame + " ")):
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


def study1_lines(rows: pd.DataFrame) -> str:
    """Normalised belief in exactly k of 3 against k, one panel per access x observe and one row per model; humans solid
    (black, 95% interval), Experiment 2 dashed, Experiment 1 dotted."""
    import matplotlib.pyplot as plt

    part = rows[rows.measure == "bet"]
    models = list(dict.fromkeys(part.model.dropna()))[:MAX_MODEL_PANELS] or [None]
    cells = [cell_label(1, c) for c in STUDY1_CELLS]
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
    fig.subplots_adjust(left=0.05, right=0.86, top=1 - 0.55 / fig.get_figheight(), bottom=0.08, hspace=0.45, wspace=0.12)
    return png(fig)


def scatter(rows: pd.DataFrame, study: int) -> str:
    """Model value (x) against the human value (y) per cell x option, one panel per model; identity line; colour = goal
    (Study 2) or access (Study 1); circles Experiment 2, crosses Experiment 1 coded; r per experiment in the title."""
    import matplotlib.pyplot as plt

    measure = "utterance" if study == 2 else "bet"
    part = rows[rows.measure == measure]
    human = part[part.source == "human"].set_index(["cell", "option"]).value
    models = list(dict.fromkeys(part[part.source == "model"].model.dropna()))[:MAX_MODEL_PANELS]
    if human.empty or not models:
        return ""
    factor, levels = ("goal", list(GOALS)) if study == 2 else ("access", [1, 2, 3])
    colours = dict(zip(levels, ("tab:blue", "tab:orange", "tab:green")))
    fig, axes = plt.subplots(1, len(models), figsize=(3.4 * len(models), 3.5), squeeze=False)
    for ax, model in zip(axes[0], models):
        titles = []
        for experiment, marker, label in (("exp2_probabilities", "o", "Exp 2"), ("exp1_coded", "x", "Exp 1")):
            sel = part[(part.model == model) & (part.experiment == experiment)]
            sel = sel.assign(human=[human.get((c, o), np.nan) for c, o in zip(sel.cell, sel.option)]).dropna(subset=["human", "value"])
            if sel.empty:
                continue
            for level in levels:
                dots = sel[sel[factor] == level]
                style = {"facecolors": "none", "edgecolors": colours[level]} if marker == "o" else {"color": colours[level]}
                ax.scatter(dots.value.astype(float), dots.human.astype(float), s=14, marker=marker, **style)
            if len(sel) >= 3 and sel.value.std() > 0 and sel.human.std() > 0:
                titles.append(f"{label} r = {np.corrcoef(sel.value.astype(float), sel.human.astype(float))[0, 1]:.2f}")
        ax.plot([0, 1], [0, 1], ":", color="grey", linewidth=1)
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.set_aspect("equal")
        ax.set_title(f"{model}\n{', '.join(titles)}", fontsize=8)
        ax.set_xlabel("model", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel("humans", fontsize=8)
    what = "utterance share per goal x state" if study == 2 else "normalised bet per access x observe"
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="s", linestyle="", color=colours[level], label=f"{factor} {level}") for level in levels]
    handles += [Line2D([], [], marker="o", linestyle="", color="grey", markerfacecolor="none", label="Exp 2"),
                Line2D([], [], marker="x", linestyle="", color="grey", label="Exp 1 coded")]
    fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 0.8), fontsize=7)
    fig.suptitle(f"Study {study}: models against humans, every {what}\n(o Exp 2, x Exp 1 coded; dotted: identity)", fontsize=9)
    fig.subplots_adjust(left=0.08, right=0.98, top=0.76, bottom=0.14, wspace=0.3)
    return png(fig)


def per_item_effects(contrasts: tuple[Contrast, ...], results: list[SourceResult], margin: float, title: str) -> str:
    """Each finding's value per unit (dots: stories for models, participants for humans) with the mean and 95% interval,
    one panel per source; 0 solid, the equivalence margin dotted."""
    import matplotlib.pyplot as plt

    results = results[: MAX_MODEL_PANELS + 1]
    if not results:
        return ""
    fig, axes = plt.subplots(len(results), 1, figsize=(max(8.0, 0.75 * len(contrasts)), 2.4 * len(results)), squeeze=False,
                             sharex=True)
    rng = np.random.default_rng(0)
    for ax, result in zip(axes[:, 0], results):
        for x, contrast in enumerate(contrasts):
            values = result.values[contrast.key]
            if len(values):
                ax.scatter(x + rng.uniform(-0.18, 0.18, len(values)), values, s=9, alpha=0.35 if result.human else 0.8,
                           color="tab:blue")
            row = result.rows[x]
            if np.isfinite(row["effect"]):
                low, high = row["lower"], row["upper"]
                if np.isfinite(low):
                    ax.plot([x, x], [low, high], color="black", linewidth=2)
                ax.plot([x], [row["effect"]], marker="D", color="black", markersize=4)
        if not any(len(result.values[c.key]) for c in contrasts):
            ax.text(0.5, 0.5, f"no {result.unit} has every cell these findings compare", transform=ax.transAxes, ha="center",
                    va="center", fontsize=8, color="grey", bbox={"facecolor": "white", "edgecolor": "none"})
        ax.axhline(0, color="grey", linewidth=0.8)
        for y in (margin, -margin):
            ax.axhline(y, color="grey", linewidth=0.8, linestyle=":")
        ax.set_ylabel(f"{result.label}\n(one dot per {result.unit})", fontsize=7)
        ax.tick_params(labelsize=7)
    axes[-1][0].set_xticks(range(len(contrasts)))
    axes[-1][0].set_xticklabels([c.key for c in contrasts], rotation=35, ha="right", fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.12, right=0.98, top=0.94, bottom=0.12, hspace=0.3)
    return png(fig)
