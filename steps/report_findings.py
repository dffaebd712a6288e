"""Report sections for the published findings (Study 1 and 2) and for agreement with its yardsticks.

Each public function is a report section ``(ReportContext) -> str`` or a part of one; the
statistics live in :mod:`steps.findings`, :mod:`steps.findings_study1`, :mod:`steps.findings_study2`,
:mod:`steps.agreement`; nothing here computes a test.
"""

from __future__ import annotations

import html

import numpy as np
import pandas as pd

from steps import agreement, exclusions, findings_study1, findings_study2, stats
from steps.comparison import study_cells
from steps.findings import VERDICTS, findings_frame
from steps.report_context import ReportContext, html_table
from steps.report_figures import per_item_effects
from steps.responses import PROMPT_COLUMNS, STUDY_MEASURES, experiment_label, human_responses, model_sources, plural

VERDICT_STYLE = {"reproduced": "ok", "not reproduced": "bad", "inconclusive": "mid", "not testable": "mid", "estimate": ""}


def _interval(value: float, low: float, high: float) -> str:
    if not np.isfinite(value):
        return "NA"
    return f"{value:.3f}" if not np.isfinite(low) else f"{value:.3f} [{low:.3f}, {high:.3f}]"


def rules_text(ctx: ReportContext, unit_models: str) -> str:
    """How the verdicts are reached, in words, with this run's settings."""
    s = ctx.settings
    return (f"<p>Each finding is a contrast of mean responses, computed per <b>unit</b> and paired within it: models: per "
            f"{unit_models} (Experiment 1 replications and repeated prompts averaged within the item; Experiment 2 one value "
            "per distinct prompt); humans: per participant (item differences among people are not modelled). "
            "Tests are exact sign-flip tests over units; within each source all "
            f"its tests are Holm-corrected (familywise &alpha; = {s.alpha:g}) after Tarone's screen: a test whose smallest "
            "attainable p cannot reach the corrected level is <b>not testable</b> (n units cannot give p below 2<sup>-n</sup>). "
            "A 'greater' finding is <b>reproduced</b> when its one-sided test is significant and the 95% interval of the effect "
            f"excludes 0, <b>not reproduced</b> when the effect is shown below the equivalence margin <b>{s.equivalence_margin:g}</b>"
            " (on the 0-1 scale of the responses; <code>--equivalence-margin</code>), and <b>inconclusive</b> otherwise. A 'no "
            "longer greater' finding is reproduced when the difference is shown below +margin (the upper test of TOST; the "
            "lower one, p(TOST lower), is shown but not required since 'not greater' includes a reversal) and its "
            "cancellation is reproduced; not reproduced when it is shown above the margin or there was no reading to lose. "
            "'p (claim)' is the one-sided p of the paper's claim (greater than 0, or below the margin), 'Holm p' the same "
            "corrected; 'why' gives the test behind each verdict. "
            "Effects: mean difference with a 95% bootstrap interval over units and d<sub>z</sub> (mean / SD of the unit "
            "differences); for models, the effect divided by the humans' (bootstrap over items and participants), shown "
            "when the human effect's interval excludes 0.</p>")


def _display(frame: pd.DataFrame, paper: str) -> pd.DataFrame:
    """The findings table as printed: one block per finding, its text once, effects with intervals."""
    out = pd.DataFrame({
        "finding": frame.finding.where(frame.finding.ne(frame.finding.shift()), ""),
        paper: frame[paper].where(frame.finding.ne(frame.finding.shift()), ""),
        "source": frame.source, "unit": frame.unit, "n": frame.n,
        "effect [95%]": [_interval(v, lo, hi) for v, lo, hi in zip(frame.effect, frame.lower, frame.upper)],
        "d_z": frame.d_z, "p (claim)": [stats.format_p(p) for p in frame.p], "Holm p (claim)": [stats.format_p(p) for p in frame.p_holm],
        "p (TOST lower)": [stats.format_p(p) for p in frame.p_tost_lower],
        "÷ human effect [95%]": [_interval(v, lo, hi) for v, lo, hi in zip(frame.ratio, frame.ratio_lower, frame.ratio_upper)],
        "verdict": [f"<span class='{VERDICT_STYLE.get(v, '')}'>{v}</span>" for v in frame.verdict],
        "why": frame.why,
    })
    if frame.p_tost_lower.isna().all():
        out = out.drop(columns="p (TOST lower)")
    return out


def _summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per source: how many findings got each verdict."""
    tested = frame[frame.verdict != "estimate"]
    counts = pd.crosstab(tested.source, tested.verdict).reindex(columns=list(VERDICTS), fill_value=0)
    return counts.reindex(list(dict.fromkeys(tested.source)))


def _table_html(frame: pd.DataFrame, paper: str) -> str:
    return html_table(_display(frame, paper), index=False).replace("&lt;span class=", "<span class=").replace(
        "&lt;/span&gt;", "</span>").replace("'&gt;", "'>")


def study1_findings_section(ctx: ReportContext) -> str:
    """Goodman & Stuhlmueller (2013)'s findings tested on every source's bets, with the per-item figure and exclusions."""
    if 1 not in ctx.tables and 1 not in ctx.human:
        return ""
    results = findings_study1.study1_results(ctx.tables.get(1), ctx.human_frame(1), ctx.settings)
    parts = ["<h2>Study 1: the paper's findings (Goodman &amp; Stuhlmueller 2013)</h2>",
             "<p>With full access, listeners bet more on exactly the stated number than on more (an upper-bounded reading); with "
             "partial access that reading weakens or disappears. The cancellation rows test that change directly, paired across "
             "access levels; the word x access row is an estimate.</p>", rules_text(ctx, "story (6 in the original design)"),
             exclusions_html(ctx)]
    if not results:
        return "".join(parts) + "<p>No bets to test: run extraction or Experiment 2, or give human bets with --human1.</p>"
    frame = findings_frame(findings_study1.FINDINGS, results, findings_study1.PAPER)
    ctx.cache["study1_findings"] = frame
    parts += ["<h3>Verdicts per source</h3>", html_table(_summary(frame)), "<h3>Findings</h3>", _table_html(frame, findings_study1.PAPER),
              per_item_effects(findings_study1.FINDINGS, results, ctx.settings.equivalence_margin,
                               "Study 1: each finding per unit (dots), mean and 95% interval (black); dotted: the margin")]
    return "".join(parts)


def study2_findings_section(ctx: ReportContext) -> str:
    """Yoon et al. (2020)'s findings tested on every source's utterances, with the humans' self-check and the per-item figure."""
    if 2 not in ctx.tables and 2 not in ctx.human:
        return ""
    results = findings_study2.study2_results(ctx.tables.get(2), ctx.human_frame(2), ctx.settings)
    parts = ["<h2>Study 2: the paper's findings (Yoon et al. 2020)</h2>",
             "<p>Speakers who want to be both informative and kind use indirect, negated utterances ('It wasn't terrible') "
             "most, and most in bad states; kind speakers tell white lies ('It was good') in bad states. The paper tested the "
             "negation effects (a mixed-effects logistic regression; its estimates are quoted); the rows marked 'shown' are in "
             "its figures and tested here the same way. Shares of a goal x state cell; bad = 0-1 hearts, good = 2-3.</p>",
             rules_text(ctx, "scenario item")]
    if not results:
        return "".join(parts) + "<p>No utterances to test: run extraction or Experiment 2, or give human data with --human2.</p>"
    frame = findings_frame(findings_study2.FINDINGS, results, findings_study2.PAPER)
    ctx.cache["study2_findings"] = frame
    check = findings_study2.self_check(frame)
    if check is not None:
        done, total, missed = check
        status = "ok" if not missed else "bad"
        text = (f"the human file reproduces {done} of {total} published findings"
                + ("." if not missed else f"; not: {html.escape('; '.join(missed))}. Check the file before reading the models."))
        parts.append(f"<p><b>Self-check</b>: <span class='{status}'>{text}</span></p>")
    parts += ["<h3>Verdicts per source</h3>", html_table(_summary(frame)), "<h3>Findings</h3>", _table_html(frame, findings_study2.PAPER),
              per_item_effects(findings_study2.FINDINGS, results, ctx.settings.equivalence_margin,
                               "Study 2: each finding per unit (dots), mean and 95% interval (black); dotted: the margin")]
    return "".join(parts)


def exclusions_html(ctx: ReportContext) -> str:
    """The Study 1 exclusions in force, what each check means, and how many trials each source lost."""
    checks = ctx.settings.study1_exclude
    if not checks:
        return ("<p>Exclusions: none (all trials used). <code>--study1-exclude prior,knowledge</code> leaves out trials failing "
                "the researchers' checks.</p>")
    counts = exclusions.exclusion_counts(ctx.tables.get(1), ctx.human_frame(1), checks, PROMPT_COLUMNS[1])
    rules = "; ".join(f"<b>{c}</b>: {html.escape(exclusions.CHECKS[c])}" for c in checks)
    return (f"<p>Exclusions (<code>--study1-exclude {','.join(checks)}</code>): trials failing a check are left out of every "
            f"Study 1 table, test and figure. {rules}. Experiment 2 does not ask the prior question.</p>" + html_table(counts, index=False))


def agreement_table(ctx: ReportContext, study: int) -> pd.DataFrame:
    """Per measure: each model x experiment's divergence and correlation (raw, corrected, 95% interval) with the humans,
    then the yardsticks on the same scale: the humans' noise ceiling, the uniform and the blind baselines."""
    checks = ctx.settings.study1_exclude if study == 1 else ()
    cells = study_cells(study)
    blind = "goal-blind (state only)" if study == 2 else "access-blind (stated number only)"
    rows = []
    for measure in STUDY_MEASURES[study]:
        people = human_responses(study, ctx.human_frame(study), measure, checks)
        if people is None:
            continue

        def add(source: str, a: dict, unit: str) -> None:
            rows.append({"measure": measure, "source": source, "resampled": unit, "cells": a["cells"], "JS raw": a["js_raw"],
                         "JS bias-corrected [95%]": _interval(a["js_corrected"], a["js_lower"], a["js_upper"]), "r raw": a["r_raw"],
                         "r corrected [95%]": _interval(a["r_corrected"], a["r_lower"], a["r_upper"])})

        for (model, experiment), responses in model_sources(ctx.tables.get(study), study, measure, checks).items():
            add(f"{model} · {experiment_label(experiment)}", agreement.agreement(people, responses, cells),
                f"participants, {plural(responses.unit)}")
        base = agreement.baselines(people, cells)
        add("baseline: uniform", agreement.agreement(people, base["uniform"], cells), "participants")
        add(f"baseline: {blind}", agreement.agreement(people, base["blind"], cells), "participants")
        ceiling = agreement.noise_ceiling(people, cells)
        rows.append({"measure": measure, "source": f"humans: noise ceiling ({ceiling['splits']} split halves)",
                     "resampled": "participants", "cells": len(cells), "JS raw": ceiling["js_floor"],
                     "JS bias-corrected [95%]": "0 (by definition)",
                     "r raw": ceiling["r_ceiling"],
                     "r corrected [95%]": f"reliability {_interval(ceiling['reliability'], np.nan, np.nan)}"})
    return pd.DataFrame(rows)


AGREEMENT_TEXT = (
    "<p>Agreement with the humans, per measure. <b>JS</b>: mean Jensen-Shannon divergence over cells (bits; 0 = same "
    "distribution). <b>r</b>: Pearson correlation over cells x options. Sampling noise inflates divergence and deflates "
    "correlation, so the raw values are shown beside bootstrap bias-corrected ones with their basic 95% interval (resampling "
    "participants and, for models, items). Yardsticks on the same scale: the <b>noise ceiling</b> row gives the raw JS and r a "
    "model equal to the true human distributions would get with these participants (split-half over random halves, "
    "Spearman-Brown corrected reliability, ceiling r = &radic;reliability); the <b>uniform</b> baseline answers every option "
    "equally; the <b>blind</b> baseline is the humans' own distribution pooled over the {factor}: a model is only "
    "interesting where it beats it.</p>")


def agreement_html(ctx: ReportContext, study: int) -> str:
    """The agreement table with its explanation (empty without human data or models)."""
    table = agreement_table(ctx, study)
    if table.empty:
        return ""
    return AGREEMENT_TEXT.format(factor="goals (state only)" if study == 2 else "access levels (stated number only)") + html_table(
        table, index=False)
