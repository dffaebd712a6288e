"""The papers' own models fitted by maximum likelihood: Yoon et al. (2020)'s polite speaker and Goodman & Stuhlmueller
(2013)'s knowledge-sensitive listener. Synthetic data are generated here from known parameters (not real participants)."""

from __future__ import annotations

import csv

import numpy as np
import pandas as pd
import pytest

from schemas.analysis import codebook
from schemas.fits import FitParameterRow, FitPredictionRow, FitSettings
from steps import fit as fits
from steps import report_fits, rsa_knowledge, rsa_polite
from steps.errors import InputValidationError
from steps.human import load_human_table
from steps.store import LocalStore

SEMANTICS = rsa_polite.load_literal_semantics()
TRUE = rsa_polite.PoliteParameters(4.0, 0.5, np.array([[0.6, 0.05, 0.35], [0.15, 0.6, 0.25], [0.35, 0.25, 0.4]]),
                                   np.array([0.8, 0.3, 0.5]), SEMANTICS.accept)


def _utterance(text: str) -> int:
    return rsa_polite.UTTERANCES.index(text)


# ---------------------------------------------------------------- the literal semantics shipped with the package


def test_shipped_semantics_are_the_papers_norming_judgements():
    assert SEMANTICS.judged.sum() == 1568
    assert SEMANTICS.participant_true is not None and len(SEMANTICS.participant_true) == 49
    assert SEMANTICS.sha256 == "84e2853a267aac9f9d704bb7552c32aa8524e765ea1706463b91f9b183f90d87"
    share = SEMANTICS.true / SEMANTICS.judged  # the table in steps/data/README.md
    assert share[_utterance("It was terrible"), 1] == pytest.approx(0.53, abs=0.005)
    assert share[_utterance("It wasn't terrible"), 1] == pytest.approx(0.45, abs=0.005)
    assert share[_utterance("It wasn't amazing"), 2] == pytest.approx(0.78, abs=0.005)
    assert share[_utterance("It was amazing"), 3] == pytest.approx(0.96, abs=0.005)
    assert np.all(SEMANTICS.accept > 0) and np.all(SEMANTICS.accept < 1)


def test_a_norming_file_with_problems_is_refused_naming_row_and_column(tmp_path):
    path = tmp_path / "semantics.csv"
    rows = [["subid", "state", "positivity", "utterance", "judgment"], ["p1", "4", "it was ___", "good", "1"],
            ["p1", "2", "it is ___", "good", "1"], ["p1", "2", "it was ___", "great", "yes please"]]
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    with pytest.raises(InputValidationError) as err:
        rsa_polite.load_literal_semantics(path)
    text = str(err.value)
    assert "row 1 (line 2), column 'state'" in text and "row 2 (line 3), column 'positivity'" in text
    assert "row 3 (line 4), column 'utterance'" in text and "row 3 (line 4), column 'judgment'" in text
    path.write_text("state,positivity,utterance\n1,it was ___,good\n")
    with pytest.raises(InputValidationError, match="required column 'judgment' is missing"):
        rsa_polite.load_literal_semantics(path)


def test_a_norming_file_missing_a_cell_is_refused(tmp_path):
    path = tmp_path / "semantics.csv"
    path.write_text("state,positivity,utterance,judgment\n" + "".join(
        f"{s},{p},{u},1\n" for s in range(4) for p in ("it was ___", "it wasn't ___") for u in ("terrible", "bad", "good", "amazing")
        if not (s == 3 and p == "it wasn't ___" and u == "amazing")))
    with pytest.raises(InputValidationError, match="no judgement of \"It wasn't amazing\" in state 3"):
        rsa_polite.load_literal_semantics(path)


# ---------------------------------------------------------------- the polite speaker


@pytest.mark.parametrize("joint", [False, True])
def test_the_gradient_is_exact(joint):
    rng = np.random.default_rng(0)
    problem = rsa_polite._Problem(rng.poisson(5, size=(3, 4, 8)).astype(float), SEMANTICS, joint)
    for _ in range(3):
        x = np.concatenate([[rng.uniform(-1, 2.5), rng.uniform(0, 2)], np.column_stack([rng.normal(0, 1, (3, 2)),
                                                                                         rng.uniform(-2, 2, 3)]).ravel()])
        if joint:
            x = np.concatenate([x, rng.uniform(-3, 3, rsa_polite.N_SEMANTICS)])
        _, grad = problem(x)
        step = 1e-6
        numeric = np.array([(problem(x + e)[0] - problem(x - e)[0]) / (2 * step) for e in np.eye(len(x)) * step])
        assert np.abs(grad - numeric).max() <= 1e-6 * max(1.0, np.abs(numeric).max())


def test_the_speaker_behaves_as_the_paper_describes():
    kind = rsa_polite.PoliteParameters(5.0, 0.3, np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]]), np.array([0.5, 0.5, 0.3]),
                                       SEMANTICS.accept)
    p = rsa_polite.speaker_distribution(kind)
    assert p.shape == (3, 4, 8) and np.allclose(p.sum(axis=2), 1)
    informational, social = p[0], p[1]
    assert informational[0].argmax() == _utterance("It was terrible") and informational[3].argmax() == _utterance("It was amazing")
    assert social[0, _utterance("It was amazing")] > social[0, _utterance("It was terrible")]  # white lies for a kind speaker


@pytest.mark.parametrize("mode", ["fixed", "joint"])
def test_fitting_the_models_own_distribution_recovers_its_parameters(mode):
    counts = rsa_polite.speaker_distribution(TRUE) * 1000  # infinite-data check: exact expected counts
    fit = rsa_polite.fit_polite(counts, SEMANTICS, seed=1, semantics_mode=mode, resamples=0)
    assert fit.params.alpha == pytest.approx(4.0, rel=0.01)
    assert fit.params.cost == pytest.approx(0.5, abs=0.01)
    assert np.abs(fit.params.omega - TRUE.omega).max() < 0.01 and np.abs(fit.params.phi - TRUE.phi).max() < 0.01
    assert fit.correlation > 0.999


def test_sampled_choices_recover_the_parameters_within_tolerance():
    """3,600 sampled choices (300 per goal x state), joint semantics: weights within 0.1, projected phi within 0.2 (phi of the
    informational goal, whose presentational weight is small, is the least determined), alpha within 15%, cost within 0.1;
    the 95% bootstrap intervals of alpha and of each goal's informational emphasis contain the true values."""
    counts = rsa_polite.simulate_counts(TRUE, 300, np.random.default_rng(3))
    # units: 300 synthetic participants, one choice per goal x state each
    rng = np.random.default_rng(4)
    units = np.zeros((300, 3, 4, 8))
    for g in range(3):
        for s in range(4):
            choices = np.repeat(np.arange(8), counts[g, s].astype(int))
            units[np.arange(300), g, s, rng.permutation(choices)] = 1
    fit = rsa_polite.fit_polite(counts, SEMANTICS, seed=3, unit_counts=units, resamples=60)
    p = fit.params
    assert np.abs(p.omega - TRUE.omega).max() < 0.1 and np.abs(p.phi - TRUE.phi).max() < 0.2
    assert p.alpha == pytest.approx(4.0, rel=0.15) and p.cost == pytest.approx(0.5, abs=0.1)
    assert fit.bootstrap is not None and len(fit.bootstrap) == 60
    names = rsa_polite.estimate_names()
    low, high = np.percentile(fit.bootstrap, [2.5, 97.5], axis=0)
    truth = TRUE.named()
    for key in [(None, "alpha")] + [(g, "informational_emphasis") for g in rsa_polite.GOALS]:
        i = names.index(key)
        assert low[i] <= truth[key] <= high[i], key


def test_the_newton_bootstrap_agrees_with_full_refits():
    """12 items x 20 observations per goal x state (a model's answers, items as units): k-step draws within 0.01 of refits."""
    counts = rsa_polite.simulate_counts(TRUE, 240, np.random.default_rng(7))
    units = np.zeros((12, 3, 4, 8))
    for g in range(3):
        for s in range(4):
            np.add.at(units, (np.arange(240) % 12, g, s, np.repeat(np.arange(8), counts[g, s].astype(int))), 1)
    newton = rsa_polite.fit_polite(counts, SEMANTICS, seed=2, unit_counts=units, resamples=4, bootstrap="newton")
    refit = rsa_polite.fit_polite(counts, SEMANTICS, seed=2, unit_counts=units, resamples=4, bootstrap="refit")
    assert newton.bootstrap is not None and refit.bootstrap is not None
    weights = [i for i, (_, n) in enumerate(rsa_polite.estimate_names()) if n in ("omega_inf", "omega_soc", "omega_pres")]
    assert np.abs(newton.bootstrap[:, weights] - refit.bootstrap[:, weights]).max() < 0.01
    assert newton.bootstrap_method.startswith("k-step") and refit.bootstrap_method.startswith("each resample refitted")


def _paper_pattern(goal: str, state: int) -> np.ndarray:
    """The paper's qualitative pattern: informative speakers say the literal truth; kind speakers say positive things
    whatever the state; speakers with both goals are indirect about bad states ("It wasn't terrible / bad") and truthful
    about good ones."""
    p = np.full(8, 0.01)
    if goal == "informative":
        p[state] += 0.85
        p[[1, 0, 3, 2][state]] += 0.10
    elif goal == "social":
        p[_utterance("It was amazing")] += 0.55
        p[_utterance("It was good")] += 0.30
        if state < 2:
            p[_utterance("It wasn't bad")] += 0.10
    elif state < 2:
        p[4 + state] += 0.40
        p[state] += 0.25
        p[_utterance("It was good")] += 0.20
    else:
        p[state] += 0.75
        p[5 - state] += 0.15
    return p / p.sum()


def write_pattern_file(path, participants: int = 200):
    """A speaker-production file in Yoon et al.'s format whose proportions are the paper's pattern (largest remainders)."""
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["subid", "trial", "item", "goal", "true_state", "positivity", "utterance"])
        choices = {}
        for goal in ("informative", "social", "both"):
            for state in range(4):
                share = _paper_pattern(goal, state) * participants
                n = np.floor(share).astype(int)
                n[np.argsort(n - share)[: participants - n.sum()]] += 1
                choices[(goal, state)] = np.repeat(np.arange(8), n)
        for person in range(participants):
            for trial, (goal, state) in enumerate(choices):
                w = rsa_polite.UTTERANCES[choices[(goal, state)][person]]
                out.writerow([f"synthetic-{person}", trial + 1, "poem", goal, f"heart{state}", "neg" if "wasn't" in w else "no_neg",
                              w.split()[-1]])
    return path


def test_the_paper_pattern_orders_the_goals_as_the_paper_does(tmp_path):
    human = load_human_table(2, write_pattern_file(tmp_path / "speaker_production.csv")).frame
    table = fits.fit_study2(None, human, FitSettings(resamples=20), "test").parameters
    est = table.set_index(["goal", "parameter"]).estimate
    emphasis = {g: est[(g, "informational_emphasis")] for g in rsa_polite.GOALS}
    # informational speakers weight information most, kind speakers kindness most, both in between
    assert emphasis["informational"] > emphasis["both"] > emphasis["social"]
    # the paper's statements on the raw weights: social weight highest for kind speakers, informational weight lowest for them
    assert est[("social", "omega_soc")] == max(est[(g, "omega_soc")] for g in rsa_polite.GOALS)
    assert est[("social", "omega_inf")] == min(est[(g, "omega_inf")] for g in rsa_polite.GOALS)
    correlation = table[(table.parameter == "correlation")].iloc[0]
    assert correlation.estimate > 0.95 and correlation.lower <= correlation.estimate <= correlation.upper


def test_the_same_seed_gives_the_same_fit(tmp_path):
    human = load_human_table(2, write_pattern_file(tmp_path / "p.csv", participants=30)).frame
    options = FitSettings(resamples=4, starts=3, seed=5)
    first, second = (fits.fit_study2(None, human, options, "test") for _ in range(2))
    columns = ["parameter", "goal", "estimate", "lower", "upper"]
    pd.testing.assert_frame_equal(first.parameters[columns], second.parameters[columns])
    pd.testing.assert_frame_equal(first.predictions, second.predictions)


# ---------------------------------------------------------------- the knowledge-sensitive listener


PRIOR_ANSWERS = np.array([[0, 1, 4, 15], [0, 2, 5, 13], [1, 1, 3, 15], [0, 0, 6, 14], [0, 2, 2, 16], [1, 1, 6, 12]])
STORIES = ["exams", "letters", "tickets", "fruits", "phones", "seeds"]


def human1_frame(alpha: float, lapse: float, access_blind: bool, seed: int, trials: int = 8) -> pd.DataFrame:
    """Study 1 trials in the human-file layout, bets drawn around a listener's predictions with the stories' priors made
    from the same ``prior`` answers the fit will read."""
    rng = np.random.default_rng(seed)
    priors = rsa_knowledge.smoothed_prior(PRIOR_ANSWERS)
    rows = rsa_knowledge.simulate_bets(alpha, lapse, priors, trials, rng, access_blind=access_blind)
    answers = [np.repeat(np.arange(4), n) for n in PRIOR_ANSWERS]
    records = []
    for k, (i, a, w, *bets) in enumerate(rows):
        story = int(i)
        records.append({"subid": f"p{k % 20}", "story": STORIES[story], "access": int(a), "observe": int(w),
                        "prior": None, **{f"bet_{j}": b for j, b in enumerate(bets)}})
    frame = pd.DataFrame(records)
    for story, given in zip(STORIES, answers):  # each story's prior answers, on its first trials
        index = frame.index[frame.story == story][: len(given)]
        frame.loc[index, "prior"] = given[: len(index)]
    return frame


def test_the_listener_draws_the_papers_inferences():
    utilities = rsa_knowledge._Utilities.of(np.full((1, 4), 0.25))
    post = rsa_knowledge.listener(np.array([6.0]), utilities)[0, 0]  # (access, w, s)
    assert post[2, 2].argmax() == 2 and post[2, 2, 2] > post[2, 2, 3]  # 'two', full access: upper-bounded
    assert post[1, 2, 3] > post[2, 2, 3]  # 'two' with access 2 leaves 3 more open than with full access
    assert np.isnan(post[0, 2]).all()  # a speaker who saw 1 cannot say 'two'


def test_an_access_using_source_is_fit_better_by_the_access_using_listener():
    frame = human1_frame(3.0, 0.05, access_blind=False, seed=1)
    result = fits.fit_study1(None, frame, FitSettings(resamples=40), "test")
    est = result.parameters.set_index(["rsa_model", "parameter"])
    assert est.loc[("gs2013_listener", "alpha"), "estimate"] == pytest.approx(3.0, rel=0.2)
    assert est.loc[("gs2013_listener", "lapse"), "estimate"] == pytest.approx(0.05, abs=0.03)
    gain = est.loc[("gs2013_listener", "access_gain_per_observation")]
    assert gain.estimate > 0 and gain.lower > 0
    assert "prior: the source's own prior answers per story" in est.loc[("gs2013_listener", "alpha"), "inputs"]


def test_an_access_blind_source_is_not_fit_better_by_the_access_using_listener():
    blind = fits.fit_study1(None, human1_frame(3.0, 0.05, access_blind=True, seed=2), FitSettings(resamples=40), "test")
    aware = fits.fit_study1(None, human1_frame(3.0, 0.05, access_blind=False, seed=2), FitSettings(resamples=40), "test")
    b, a = (r.parameters.set_index(["rsa_model", "parameter"]) for r in (blind, aware))
    gain = b.loc[("gs2013_listener", "access_gain_per_observation")]
    assert gain.estimate < 0 and gain.upper < 0  # the access-blind listener fits it better
    # and the access-using listener fits the access-blind source worse than the source that uses access
    key = ("gs2013_listener", "log_likelihood_per_observation")
    assert b.loc[key, "estimate"] < a.loc[key, "estimate"]


# ---------------------------------------------------------------- tables, codebooks, report section


def test_fit_tables_are_written_with_codebooks(tmp_path):
    human = load_human_table(2, write_pattern_file(tmp_path / "p.csv", participants=20)).frame
    tables = fits.fit_study2(None, human, FitSettings(resamples=3, starts=2), "test", run_id="run-x")
    store = LocalStore(tmp_path / "run")
    outputs = fits.write_fit_tables(tables, store, "fits/study2_rsa_parameters", "fits/study2_rsa_predictions")
    assert len(outputs) == 6
    parameters = pd.read_csv(tmp_path / "run" / "fits" / "study2_rsa_parameters.csv", keep_default_na=False, na_values=["NA"])
    assert list(parameters.columns) == list(FitParameterRow.model_fields) and set(parameters.run_id) == {"run-x"}
    book = pd.read_csv(tmp_path / "run" / "fits" / "study2_rsa_predictions_codebook.csv")
    assert book.column.tolist() == list(FitPredictionRow.model_fields) and book.meaning.str.len().gt(0).all()
    assert [r["column"] for r in codebook(FitParameterRow)] == list(FitParameterRow.model_fields)
    predictions = pd.read_parquet(tmp_path / "run" / "fits" / "study2_rsa_predictions.parquet")
    cell = predictions[(predictions.goal == "social") & (predictions.state == 0)]
    assert len(cell) == 8 and cell.predicted.sum() == pytest.approx(1) and cell.observed.sum() == pytest.approx(1)


def test_the_report_section_shows_parameters_and_figures(tmp_path):
    human2 = load_human_table(2, write_pattern_file(tmp_path / "p.csv", participants=20)).frame
    study2 = fits.fit_study2(None, human2, FitSettings(resamples=3, starts=2), "test")
    study1 = fits.fit_study1(None, human1_frame(3.0, 0.05, False, seed=3, trials=2), FitSettings(resamples=5), "test")
    page = report_fits.fits_section({1: (study1.parameters, study1.predictions), 2: (study2.parameters, study2.predictions)}, [1, 2])
    assert "Yoon, Tessler, Goodman" in page and "Goodman &amp; Stuhlmüller" in page
    assert page.count("<img") == 2 and "informational emphasis" in page and "access gain" in page
    assert "Not fitted" in report_fits.fits_section({}, [1])
