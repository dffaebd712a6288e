"""The papers' own models fitted to every source of a run: the human file, each model's Experiment 1 and 2.

Study 2: Yoon et al. (2020)'s polite speaker (:mod:`steps.rsa_polite`) fitted to
- humans (``--human2``): one choice per trial; bootstrap unit: participant;
- a model's Experiment 2: each distinct prompt's distribution over the 8 utterances as expected counts (the
  cross-entropy); bootstrap unit: item (``Domain``);
- a model's Experiment 1: each coded answer (``response_cleaned``) as a choice; bootstrap unit: item.
Study 1: Goodman & Stuhlmueller (2013)'s listener and the access-blind listener (:mod:`steps.rsa_knowledge`) fitted to
each source's normalised bets (humans ``bet_0..3``; Experiment 1 ``probability_0..3``; Experiment 2 ``state{k}_mean``
per distinct prompt) with the source's own prior answers (humans ``prior``; a model's ``Prior_A``, also for its
Experiment 2) per story; bootstrap unit: participant (humans) or story (models).

Pure: analysis tables in, long tables (:mod:`schemas.fits`) out; :func:`write_fit_tables` writes them.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd
from pydantic import BaseModel

from schemas.analysis import codebook
from schemas.fits import FitParameterRow, FitPredictionRow, FitSettings
from schemas.inputs import Study1Input, Study2Input
from schemas.probabilities import ASSESSMENTS, FRAMES
from steps import rsa_knowledge, rsa_polite
from steps.store import Store
from steps.tables import write_table

JOINT_COLUMNS = [f"prob_{f}_{a}" for f in FRAMES for a in ASSESSMENTS]  # the order of rsa_polite.UTTERANCES
PROMPT_COLUMNS = {1: [c for c in Study1Input.model_fields if c != "participant_id"],
                  2: [c for c in Study2Input.model_fields if c not in ("Participant_ID", "Utterance")]}
LEVEL = 0.95


@dataclass(frozen=True)
class Source:
    """Whose answers: humans, or one model's Experiment 1 coded answers or Experiment 2 probabilities."""

    source: str
    experiment: Optional[str]
    model: Optional[str]
    unit: str

    @property
    def label(self) -> str:
        """'humans', or 'model · Exp 2' / 'model · Exp 1 coded'."""
        if self.model is None:
            return "humans"
        return f"{self.model} · {'Exp 2' if self.experiment == 'exp2_probabilities' else 'Exp 1 coded'}"

    def fields(self) -> dict:
        """The source columns of a fits row."""
        return {"source": self.source, "experiment": self.experiment, "model": self.model}


@dataclass
class FitTables:
    """The two long tables of one study's fits, and each source's fit time (CPU seconds, one thread)."""

    parameters: pd.DataFrame
    predictions: pd.DataFrame
    seconds: dict[str, float]


def _distinct_prompts(table: pd.DataFrame, study: int) -> pd.DataFrame:
    """One row per (model, prompt): Experiment 2 gives the same numbers for the same prompt."""
    return table.drop_duplicates(["model_name", *[c for c in PROMPT_COLUMNS[study] if c in table.columns]])


def _normalised(frame: pd.DataFrame, columns: list[str]) -> tuple[pd.DataFrame, np.ndarray]:
    if not set(columns) <= set(frame.columns):
        return frame[:0], np.zeros((0, len(columns)))
    values = frame[columns].apply(pd.to_numeric, errors="coerce").astype(float)
    ok = values.notna().all(axis=1) & (values.sum(axis=1) > 0)
    kept = values[ok].to_numpy()
    return frame[ok], kept / kept.sum(axis=1, keepdims=True)


def _one_hot(choices: pd.Series, options: tuple[str, ...]) -> np.ndarray:
    index = {o: i for i, o in enumerate(options)}
    out = np.zeros((len(choices), len(options)))
    out[np.arange(len(choices)), [index[c] for c in choices]] = 1.0
    return out


def _interval(draws: Optional[np.ndarray], column: int) -> tuple[Optional[float], Optional[float]]:
    if draws is None or len(draws) < 2:
        return None, None
    values = draws[:, column]
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return None, None
    tail = (1 - LEVEL) / 2 * 100
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


def _plain(value: Optional[float]) -> Optional[float]:
    return None if value is None or not np.isfinite(value) else float(value)


def _boot_text(source: Source, resamples: int, how: str) -> str:
    what = "participants" if source.unit == "participant" else "items"
    return f"bootstrap over {what} ({resamples} resamples; {how}; 95% percentile)"


# ---------------------------------------------------------------- Study 2: the polite speaker


def study2_sources(table: Optional[pd.DataFrame], human: Optional[pd.DataFrame]) -> list[tuple[Source, np.ndarray, np.ndarray]]:
    """(source, counts (3, 4, 8), per-unit counts (units, 3, 4, 8)) for every Study 2 source with data."""
    out = []
    if human is not None and len(human):
        values = _one_hot(human.utterance, rsa_polite.UTTERANCES)
        out.append((Source("human", None, None, "participant"), *_polite_counts(human, values, human.subid)))
    if table is None:
        return out
    for model, part in table.groupby("model_name", observed=True, sort=True):
        prompts, values = _normalised(_distinct_prompts(part, 2), JOINT_COLUMNS)
        if len(prompts):
            out.append((Source("model", "exp2_probabilities", str(model), "item"), *_polite_counts(prompts, values, prompts.Domain)))
        coded = part[part.response_cleaned.isin(rsa_polite.UTTERANCES)] if "response_cleaned" in part else part[:0]
        if len(coded):
            values = _one_hot(coded.response_cleaned, rsa_polite.UTTERANCES)
            out.append((Source("model", "exp1_coded", str(model), "item"), *_polite_counts(coded, values, coded.Domain)))
    return out


def _polite_counts(frame: pd.DataFrame, values: np.ndarray, units: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    goals = np.array([rsa_polite.GOALS.index(str(g)) for g in frame.Goal_simplified])
    states = frame.State_number.astype(int).to_numpy()
    names, unit_index = np.unique(units.astype(str).to_numpy(), return_inverse=True)
    per_unit = np.zeros((len(names), len(rsa_polite.GOALS), 4, 8))
    np.add.at(per_unit, (unit_index, goals, states), values)
    return per_unit.sum(axis=0), per_unit


def fit_study2(table: Optional[pd.DataFrame], human: Optional[pd.DataFrame], options: FitSettings, code_version: str,
               run_id: Optional[str] = None, semantics: Optional[rsa_polite.LiteralSemantics] = None,
               s3_endpoint: Optional[str] = None) -> FitTables:
    """The polite speaker fitted to every Study 2 source: parameter rows, prediction rows, seconds per source. The norming file
    of ``options.semantics`` is read unless ``semantics`` are given."""
    semantics = semantics or rsa_polite.load_literal_semantics(options.semantics, s3_endpoint)
    how = ("inferred jointly with the choices, constrained by the norming judgements" if options.semantics_mode == "joint"
           else "fixed at the norming judgements' posterior mean")
    inputs = f"literal semantics {how}: {semantics.source} (sha256 {semantics.sha256[:12]})"
    params: list[dict] = []
    predictions: list[dict] = []
    seconds: dict[str, float] = {}
    names = rsa_polite.estimate_names()
    for source, counts, unit_counts in study2_sources(table, human):
        fit = rsa_polite.fit_polite(counts, semantics, options.seed, options.starts, unit_counts, options.resamples,
                                    options.semantics_mode, options.bootstrap)
        seconds[source.label] = fit.cpu_seconds
        resamples = 0 if fit.bootstrap is None else len(fit.bootstrap)
        common = {"run_id": run_id, "study": 2, "rsa_model": "yoon2020_polite_speaker", **source.fields(), "unit": source.unit,
                  "units": fit.units, "resamples": resamples, "observations": fit.observations, "log_likelihood": fit.log_likelihood,
                  "wall_ms": fit.seconds * 1000, "cpu_ms": fit.cpu_seconds * 1000, "seed": options.seed, "inputs": inputs,
                  "notes": "; ".join(fit.notes) or None, "code_version": code_version}
        estimates = fit.estimates()
        for column, (goal, name) in enumerate(names):
            low, high = _interval(fit.bootstrap, column)
            estimate = _plain(estimates[(goal, name)])
            params.append({**common, "goal": goal, "parameter": name, "estimate": estimate,
                           "lower": _plain(low) if estimate is not None else None, "upper": _plain(high) if estimate is not None else None,
                           "interval": _boot_text(source, resamples, fit.bootstrap_method) if low is not None and estimate is not None
                           else None})
        totals = counts.sum(axis=2)
        for g, goal in enumerate(rsa_polite.GOALS):
            for s in rsa_polite.STATES:
                if totals[g, s] <= 0:
                    continue
                for w, utterance in enumerate(rsa_polite.UTTERANCES):
                    predictions.append({"run_id": run_id, "study": 2, "rsa_model": "yoon2020_polite_speaker", **source.fields(),
                                        "measure": "utterance", "cell": f"goal={goal}, state={s}", "goal": goal, "state": s,
                                        "access": None, "observe": None, "option": utterance,
                                        "observed": _clip(fit.observed[g, s, w]), "predicted": _clip(fit.predicted[g, s, w]),
                                        "n": float(totals[g, s])})
    return FitTables(_frame(params, FitParameterRow), _frame(predictions, FitPredictionRow), seconds)


def _clip(value: float) -> Optional[float]:
    return None if not np.isfinite(value) else float(min(1.0, max(0.0, value)))


def _frame(rows: list[dict], row_model: type[BaseModel]) -> pd.DataFrame:
    for row in rows:
        row_model.model_validate(row)
    return pd.DataFrame(rows, columns=list(row_model.model_fields))


# ---------------------------------------------------------------- Study 1: the knowledge-sensitive listener


@dataclass
class KnowledgeData:
    """One Study 1 source's soft counts per story, per-unit counts, and the prior per story."""

    source: Source
    stories: list[str]
    counts: np.ndarray  # (stories, 3, 4, 4)
    unit_counts: np.ndarray  # (units, stories, 3, 4, 4)
    priors: np.ndarray  # (stories, 4)
    prior_note: str


def _prior_counts(frame: pd.DataFrame, story_column: str, answer_column: str, stories: list[str]) -> np.ndarray:
    counts = np.zeros((len(stories), 4))
    if answer_column not in frame:
        return counts
    answered = frame[frame[answer_column].notna()]
    index = {s: i for i, s in enumerate(stories)}
    for story, answer in zip(answered[story_column].astype(str), answered[answer_column].astype(float).astype(int)):
        if story in index and 0 <= answer <= 3:
            counts[index[story], answer] += 1
    return counts


def _priors(answer_counts: np.ndarray, what: str) -> tuple[np.ndarray, str]:
    """Per story: its own answers (+1/2 per state); a story without answers gets the source's pooled answers; none at all: uniform."""
    if answer_counts.sum() == 0:
        return np.full(answer_counts.shape, 0.25), f"prior: uniform (the source has no {what} answers)"
    pooled = answer_counts.sum(axis=0)
    filled = np.where(answer_counts.sum(axis=1, keepdims=True) > 0, answer_counts, pooled)
    missing = int((answer_counts.sum(axis=1) == 0).sum())
    note = (f"prior: the source's own {what} answers per story, +1/2 per state ({int(answer_counts.sum())} answers)"
            + (f"; {missing} story/stories without answers use the pooled answers" if missing else ""))
    return rsa_knowledge.smoothed_prior(filled), note


def _knowledge_data(source: Source, frame: pd.DataFrame, bets: np.ndarray, story_column: str, units: pd.Series,
                    prior_frame: pd.DataFrame, prior_column: str, prior_story_column: str) -> KnowledgeData:
    stories = sorted(set(frame[story_column].astype(str)))
    index = {s: i for i, s in enumerate(stories)}
    story_idx = np.array([index[s] for s in frame[story_column].astype(str)])
    access = frame.access.astype(int).to_numpy() - 1
    observe = frame.observe.astype(int).to_numpy()
    names, unit_index = np.unique(units.astype(str).to_numpy(), return_inverse=True)
    per_unit = np.zeros((len(names), len(stories), 3, 4, 4))
    np.add.at(per_unit, (unit_index, story_idx, access, observe), bets)
    priors, note = _priors(_prior_counts(prior_frame, prior_story_column, prior_column, stories), prior_column)
    return KnowledgeData(source, stories, per_unit.sum(axis=0), per_unit, priors, note)


def study1_sources(table: Optional[pd.DataFrame], human: Optional[pd.DataFrame]) -> list[KnowledgeData]:
    """Every Study 1 source with bets, with its soft counts and its own prior."""
    out = []
    if human is not None and "bet_0" in human:
        part = human[human.bet_0.notna()]
        if len(part):
            bets = part[[f"bet_{k}" for k in range(4)]].to_numpy(float)
            bets = bets / bets.sum(axis=1, keepdims=True)
            out.append(_knowledge_data(Source("human", None, None, "participant"), part, bets, "story", part.subid, human, "prior",
                                       "story"))
    if table is None:
        return out
    for model, part in table.groupby("model_name", observed=True, sort=True):
        coded, bets = _normalised(part, [f"probability_{k}" for k in range(4)])
        if len(coded):
            out.append(_knowledge_data(Source("model", "exp1_coded", str(model), "item"), coded, bets, "story_shortname",
                                       coded.story_shortname, part, "Prior_A", "story_shortname"))
        prompts, bets = _normalised(_distinct_prompts(part, 1), [f"state{k}_mean" for k in range(4)])
        if len(prompts):
            out.append(_knowledge_data(Source("model", "exp2_probabilities", str(model), "item"), prompts, bets, "story_shortname",
                                       prompts.story_shortname, part, "Prior_A", "story_shortname"))
    return out


RSA_MODEL_OF = {"access_aware": "gs2013_listener", "access_blind": "gs2013_access_blind_listener"}


def fit_study1(table: Optional[pd.DataFrame], human: Optional[pd.DataFrame], options: FitSettings, code_version: str,
               run_id: Optional[str] = None) -> FitTables:
    """Both Study 1 listeners fitted to every source: parameter rows, prediction rows, seconds per source."""
    params: list[dict] = []
    predictions: list[dict] = []
    seconds: dict[str, float] = {}
    names = rsa_knowledge.estimate_names()
    for data in study1_sources(table, human):
        source = data.source
        fit = rsa_knowledge.fit_knowledge(data.counts, data.priors, options.seed, rsa_knowledge.DEFAULT_STARTS, data.unit_counts,
                                          options.resamples)
        seconds[source.label] = fit.cpu_seconds
        resamples = 0 if fit.bootstrap is None else len(fit.bootstrap)
        estimates = fit.estimates()
        for listener in (fit.aware, fit.blind):
            common = {"run_id": run_id, "study": 1, "rsa_model": RSA_MODEL_OF[listener.listener], **source.fields(), "goal": None,
                      "unit": source.unit, "units": fit.units, "resamples": resamples, "observations": listener.observations,
                      "log_likelihood": listener.log_likelihood, "wall_ms": fit.seconds * 1000, "cpu_ms": fit.cpu_seconds * 1000,
                      "seed": options.seed, "inputs": data.prior_note, "notes": "; ".join(listener.notes) or None,
                      "code_version": code_version}
            for column, (who, name) in enumerate(names):
                if who != listener.listener:
                    continue
                low, high = _interval(fit.bootstrap, column)
                params.append({**common, "parameter": name, "estimate": _plain(estimates[(who, name)]), "lower": _plain(low),
                               "upper": _plain(high),
                               "interval": _boot_text(source, resamples, rsa_knowledge.BOOTSTRAP_METHOD) if low is not None else None})
            predictions += _knowledge_predictions(data, listener, run_id)
    return FitTables(_frame(params, FitParameterRow), _frame(predictions, FitPredictionRow), seconds)


def _knowledge_predictions(data: KnowledgeData, listener: rsa_knowledge.ListenerFit, run_id: Optional[str]) -> list[dict]:
    n = data.counts.sum(axis=3)  # (i, a, w)
    rows = []
    for a in rsa_knowledge.ACCESS:
        for w in range(a + 1):
            cell_n = n[:, a - 1, w].sum()
            if cell_n <= 0:
                continue
            observed = data.counts[:, a - 1, w].sum(axis=0) / cell_n
            predicted = np.einsum("i,is->s", n[:, a - 1, w], np.nan_to_num(listener.predicted[:, a - 1, w])) / cell_n
            for k in rsa_knowledge.STATES:
                rows.append({"run_id": run_id, "study": 1, "rsa_model": RSA_MODEL_OF[listener.listener], **data.source.fields(),
                             "measure": "bet", "cell": f"access={a}, observe={w}", "goal": None, "state": None, "access": a,
                             "observe": w, "option": str(k), "observed": _clip(observed[k]), "predicted": _clip(predicted[k]),
                             "n": float(cell_n)})
    return rows


# ---------------------------------------------------------------- both studies, and writing


def fit_study(study: int, table: Optional[pd.DataFrame], human: Optional[pd.DataFrame], options: FitSettings, code_version: str,
              run_id: Optional[str] = None, s3_endpoint: Optional[str] = None) -> FitTables:
    """The paper's model of ``study`` fitted to every source of that study (see the module docstring)."""
    if study == 1:
        return fit_study1(table, human, options, code_version, run_id)
    if study == 2:
        return fit_study2(table, human, options, code_version, run_id, s3_endpoint=s3_endpoint)
    raise ValueError(f"there is no model of study {study} to fit")


def write_fit_tables(tables: FitTables, store: Store, parameters_stem: str, predictions_stem: str) -> list[str]:
    """Both tables as Parquet and CSV, each with its codebook (``<stem>_codebook.csv``); where they are."""
    outputs = write_table(tables.parameters, FitParameterRow, store, parameters_stem)
    outputs += write_table(tables.predictions, FitPredictionRow, store, predictions_stem)
    for stem, row_model in ((parameters_stem, FitParameterRow), (predictions_stem, FitPredictionRow)):
        key = stem + "_codebook.csv"
        buffer = io.StringIO()
        pd.DataFrame(codebook(row_model)).to_csv(buffer, index=False)
        store.write_bytes(key, buffer.getvalue().encode("utf-8"))
        outputs.append(store.uri(key))
    return outputs
