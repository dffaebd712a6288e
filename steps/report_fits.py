"""Report section "The papers' models": the fitted parameters per source and the predictions beside the data.

Input: per study the two fit tables (:mod:`schemas.fits`, written by the fit step); nothing is fitted here.
:func:`fits_section` returns the HTML of both studies (a line saying what is missing when there are no fits).
"""

from __future__ import annotations

import html
from typing import Optional

import numpy as np
import pandas as pd

from steps.report_context import ReportContext, png
from steps.rsa_polite import GOALS, PAPER_WEIGHTS, informational_emphasis

MAX_SOURCES = 8  # sources drawn in the per-cell figures (every source is in the tables)
PAPER_R2 = 0.97  # Yoon et al. (2020): variance explained by the full model on the human data


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(border=0, classes="t", na_rep="NA", index=False, escape=True)


def _with_interval(row: Optional[pd.Series]) -> str:
    if row is None or pd.isna(row["estimate"]):
        return "NA"
    if pd.isna(row["lower"]):
        return f"{row['estimate']:.2f}"
    return f"{row['estimate']:.2f} [{row['lower']:.2f}, {row['upper']:.2f}]"


def _label(source: str, experiment: Optional[str], model: Optional[str]) -> str:
    if source == "human":
        return "humans"
    return f"{model} · {'Exp 2' if experiment == 'exp2_probabilities' else 'Exp 1 coded'}"


def _labelled(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(label=[_label(s, e, m if isinstance(m, str) else None)
                               for s, e, m in zip(frame.source, frame.experiment.where(frame.experiment.notna(), None), frame.model)])


def _pick(part: pd.DataFrame, parameter: str, goal: Optional[str] = None) -> Optional[pd.Series]:
    sel = part[part.parameter == parameter]
    sel = sel[sel.goal.isna()] if goal is None else sel[sel.goal == goal]
    return sel.iloc[0] if len(sel) else None


def _fmt(value, digits: int = 2) -> str:
    return "NA" if value is None or pd.isna(value) else f"{value:.{digits}f}"


# ---------------------------------------------------------------- Study 2


def _paper_line() -> str:
    parts = []
    for goal in GOALS:
        w_inf, w_soc, w_pres, phi = PAPER_WEIGHTS[goal]
        emphasis = informational_emphasis(np.array([w_inf, w_soc, w_pres]), phi)
        parts.append(f"{goal} ω = ({w_inf:.2f}, {w_soc:.2f}, {w_pres:.2f}), φ̂ = {phi:.2f}, informational emphasis {emphasis:.2f}")
    return ("The paper's estimates on its human data (Table 1, Bayesian posterior): " + "; ".join(parts)
            + f"; r² = {PAPER_R2}.")


def _study2(parameters: pd.DataFrame, predictions: pd.DataFrame) -> str:
    parts = ["<h2>Study 2: the paper's model (Yoon, Tessler, Goodman &amp; Frank 2020)</h2>",
             "<p>The polite speaker S2 chooses among the 8 utterances by weighing informational utility (ln L1(s|w)), social "
             "utility (the value of the state the listener infers) and presentational utility (ln L1(φ̂|w): how well the "
             "listener's inference about the speaker's goal matches the goal weight φ̂ she wants to project, 1 = informative, "
             "0 = kind), minus a cost c for negation, with speaker optimality α. Weights ω and φ̂ are fitted per goal "
             "condition, α and c per source, by maximum likelihood (Experiment 2: the distributions as expected counts); "
             "95% intervals by re-estimating on bootstrap resamples of participants (humans) or items (models). The "
             "informational emphasis ω_inf + ω_pres φ̂ is the goal's weight on being or appearing informative (the rest is on "
             "being or appearing kind). " + _paper_line() + "</p>"]
    if parameters.empty:
        return "".join(parts) + "<p>No Study 2 source with utterance choices or distributions to fit.</p>"
    inputs = parameters.inputs.dropna().unique()
    if len(inputs):
        parts.append(f"<p>{html.escape('; '.join(inputs))}.</p>")
    labelled = _labelled(parameters)
    rows, fits = [], []
    for label, part in labelled.groupby("label", sort=False):
        for goal in GOALS:
            rows.append({"source": label, "goal": goal, **{name: _with_interval(_pick(part, key, goal)) for name, key in (
                ("ω_inf", "omega_inf"), ("ω_soc", "omega_soc"), ("ω_pres", "omega_pres"), ("φ̂", "phi"),
                ("informational emphasis", "informational_emphasis"))}})
        first = part.iloc[0]
        r = _pick(part, "correlation")
        fits.append({"source": label, "α": _with_interval(_pick(part, "alpha")),
                     "negation cost c": _with_interval(_pick(part, "negation_cost")),
                     "r (goal × state × utterance)": _with_interval(r),
                     "r²": _fmt(r["estimate"] ** 2) if r is not None and not pd.isna(r["estimate"]) else "NA",
                     "observations": _fmt(first.observations, 1), "bootstrap units": f"{int(first.units)} {first.unit}s",
                     "resamples": int(first.resamples),
                     "log-likelihood": _fmt(first.log_likelihood, 1), "fit CPU s": _fmt(first.cpu_ms / 1000, 1),
                     "notes": first.notes if isinstance(first.notes, str) else ""})
    parts.append("<h3>Goal weights per source and goal</h3>" + _table(pd.DataFrame(rows)))
    parts.append("<h3>Shared parameters and fit per source</h3>" + _table(pd.DataFrame(fits)))
    if not predictions.empty:
        parts.append(_study2_figure(_labelled(predictions)))
    return "".join(parts)


def _study2_figure(predictions: pd.DataFrame) -> str:
    """Per source (rows) and goal x frame (columns): observed proportion (solid) and fitted S2 (dashed) per utterance by state."""
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(predictions.label))[:MAX_SOURCES]
    columns = [(goal, frame) for frame in ("It was", "It wasn't") for goal in GOALS]
    fig, axes = plt.subplots(len(labels), len(columns), figsize=(2.4 * len(columns), 2.4 * len(labels)), sharey=True, squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, label in enumerate(labels):
        part = predictions[predictions.label == label]
        for j, (goal, frame) in enumerate(columns):
            ax = axes[i][j]
            options = [o for o in dict.fromkeys(part.option) if o.startswith(frame + " ")]
            for k, option in enumerate(options):
                sel = part[(part.goal == goal) & (part.option == option)].sort_values("state")
                if sel.empty:
                    continue
                word = option.split()[-1]
                ax.plot(sel.state, sel.observed.astype(float), "-", color=colours[k], marker="o", markersize=3, label=f"{word} (data)")
                ax.plot(sel.state, sel.predicted.astype(float), "--", color=colours[k], label=f"{word} (model fit)")
            ax.set_title(f"{goal}: {frame} ...", fontsize=8)
            ax.set_xticks([0, 1, 2, 3])
            ax.tick_params(labelsize=7)
        axes[i][0].set_ylabel(label, fontsize=8)
    axes[-1][0].set_xlabel("true state (hearts)", fontsize=8)
    return _finish(fig, axes, "Study 2: each source's utterance choices (solid) and the fitted polite speaker (dashed)")


# ---------------------------------------------------------------- Study 1


def _verdict(row: Optional[pd.Series]) -> str:
    if row is None or pd.isna(row["estimate"]):
        return "NA"
    if pd.isna(row["lower"]):
        return "no interval (too few units)"
    if row["lower"] > 0:
        return "uses access: the access-using listener fits better"
    if row["upper"] < 0:
        return "the access-blind listener fits better"
    return "not resolved: the interval includes 0"


def _study1(parameters: pd.DataFrame, predictions: pd.DataFrame) -> str:
    parts = ["<h2>Study 1: the paper's model (Goodman &amp; Stuhlmüller 2013)</h2>",
             "<p>The listener infers how many of the 3 items have the property from the statement, knowing the speaker looked "
             "at only <i>access</i> of them: a speaker who chooses numbers with lower-bound meanings informatively (optimality α) "
             "given what she saw. The prior over 0-3 is each source's own answer to the prior question. Predicted bets are "
             "the listener's belief with a lapse spread evenly over 0-3. Beside it, an access-blind listener takes every "
             "speaker to have seen all 3; the access gain is the log-likelihood per observation of the access-using "
             "listener minus the access-blind one's (both fitted with their own α and lapse): a source that uses the "
             "speaker's access is fitted better by the access-using listener. 95% intervals by refitting on bootstrap "
             "resamples of participants (humans) or stories (models).</p>"]
    if parameters.empty:
        return "".join(parts) + "<p>No Study 1 source with bets to fit.</p>"
    labelled = _labelled(parameters)
    rows = []
    for label, part in labelled.groupby("label", sort=False):
        aware = part[part.rsa_model == "gs2013_listener"]
        blind = part[part.rsa_model == "gs2013_access_blind_listener"]
        first = aware.iloc[0] if len(aware) else part.iloc[0]
        gain = _pick(aware, "access_gain_per_observation")
        rows.append({"source": label, "α": _with_interval(_pick(aware, "alpha")), "lapse": _with_interval(_pick(aware, "lapse")),
                     "r": _with_interval(_pick(aware, "correlation")), "α (access-blind)": _with_interval(_pick(blind, "alpha")),
                     "r (access-blind)": _with_interval(_pick(blind, "correlation")),
                     "access gain (log-lik per obs.)": _with_interval(gain),
                     "verdict": _verdict(gain), "observations": _fmt(first.observations, 1),
                     "bootstrap units": f"{int(first.units)} {first.unit}s",
                     "prior": first.inputs, "fit CPU s": _fmt(first.cpu_ms / 1000, 1),
                     "notes": first.notes if isinstance(first.notes, str) else ""})
    parts.append(_table(pd.DataFrame(rows)))
    if not predictions.empty:
        parts.append(_study1_figure(_labelled(predictions)))
    return "".join(parts)


def _study1_figure(predictions: pd.DataFrame) -> str:
    """Per source (rows) and access x observe (columns): observed mean bets (solid), access-using (dashed) and access-blind
    (dotted) predictions against k."""
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(predictions.label))[:MAX_SOURCES]
    cells = [f"access={a}, observe={o}" for a in (1, 2, 3) for o in range(a + 1)]
    fig, axes = plt.subplots(len(labels), len(cells), figsize=(1.9 * len(cells), 2.3 * len(labels)), sharey=True, squeeze=False)
    styles = {"gs2013_listener": ("--", "tab:blue", "access-using listener"),
              "gs2013_access_blind_listener": (":", "tab:orange", "access-blind listener")}
    for i, label in enumerate(labels):
        part = predictions[predictions.label == label]
        for j, cell in enumerate(cells):
            ax = axes[i][j]
            sel = part[part.cell == cell]
            if len(sel):
                data = sel[sel.rsa_model == "gs2013_listener"].assign(k=lambda f: f.option.astype(int)).sort_values("k")
                ax.plot(data.k, data.observed.astype(float), "-", color="black", marker="o", markersize=3, label="data")
                for rsa_model, (style, colour, what) in styles.items():
                    fitted = sel[sel.rsa_model == rsa_model].assign(k=lambda f: f.option.astype(int)).sort_values("k")
                    ax.plot(fitted.k, fitted.predicted.astype(float), style, color=colour, label=what)
            ax.set_title(cell, fontsize=7)
            ax.set_xticks([0, 1, 2, 3])
            ax.tick_params(labelsize=7)
        axes[i][0].set_ylabel(label, fontsize=8)
    axes[-1][0].set_xlabel("exactly k of 3", fontsize=8)
    return _finish(fig, axes, "Study 1: each source's bets (solid) and the fitted listeners")


def _finish(fig, axes, title: str) -> str:
    handles = {label: h for ax in np.ravel(axes) for h, label in zip(*ax.get_legend_handles_labels())}
    fig.legend(list(handles.values()), list(handles), loc="center right", fontsize=7)
    fig.suptitle(title, fontsize=10)
    height = fig.get_size_inches()[1]
    fig.subplots_adjust(left=0.06, right=0.84, top=1 - 0.55 / height, bottom=0.4 / height, hspace=0.5, wspace=0.12)
    return png(fig)


def fits_section(fits: Optional[dict[int, tuple[pd.DataFrame, pd.DataFrame]]], studies: list[int]) -> str:
    """HTML for each of ``studies``: the fit tables (study -> (parameters, predictions)) or a line saying they are missing."""
    parts = []
    for study in sorted(studies):
        if not fits or study not in fits:
            parts.append(f"<h2>Study {study}: the paper's model</h2><p>Not fitted in this run (stage <code>fit</code>; "
                         "<code>grace-pipeline fit</code> fits a finished run).</p>")
            continue
        parameters, predictions = fits[study]
        parts.append(_study2(parameters, predictions) if study == 2 else _study1(parameters, predictions))
    return "".join(parts)


def fits_report_section(ctx: ReportContext) -> str:
    """The report section (see :data:`steps.report.SECTIONS`): the fits of every study of the run."""
    return fits_section(ctx.fits, ctx.studies)
