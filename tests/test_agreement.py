"""Agreement yardsticks on synthetic human data whose true distributions, and so reliability and noise, are known."""

from __future__ import annotations

import numpy as np
import pytest

from steps import agreement, stats
from steps.human import load_human_table
from steps.responses import STUDY2_CELLS, Responses, human2_responses
from tests.human_data import write_human2

CELLS = [(g, s) for g in ("a", "b", "c") for s in range(4)]
OPTIONS = [f"o{k}" for k in range(8)]


def _true_cells(seed: int = 11) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.ones(len(OPTIONS)), size=len(CELLS))


def _people(truth: np.ndarray, participants: int, seed: int) -> Responses:
    """A synthetic human file: every participant one draw from the true distribution of every cell."""
    rng = np.random.default_rng(seed)
    cells, values, groups = [], [], []
    for p in range(participants):
        for c, dist in zip(CELLS, truth):
            choice = rng.choice(len(OPTIONS), p=dist)
            cells.append(c)
            values.append(np.eye(len(OPTIONS))[choice])
            groups.append(f"p{p}")
    return Responses(OPTIONS, cells, np.array(values), np.array(groups), "participant", True)


def test_noise_ceiling_recovers_a_known_reliability():
    """Cell means of N one-draw participants: reliability = var(true) / (var(true) + mean p(1-p) / N) over cells x options."""
    truth, n = _true_cells(), 30
    expected = truth.var() / (truth.var() + np.mean(truth * (1 - truth)) / n)
    estimates = [agreement.noise_ceiling(_people(truth, n, seed), CELLS)["reliability"] for seed in range(12)]
    assert 0.6 < expected < 0.9  # a reliability the estimate can miss in either direction
    assert np.mean(estimates) == pytest.approx(expected, abs=0.02)
    low_noise = agreement.noise_ceiling(_people(truth, 300, 1), CELLS)
    assert low_noise["reliability"] > np.mean(estimates) and low_noise["r_ceiling"] == pytest.approx(np.sqrt(low_noise["reliability"]))


def test_divergence_floor_is_what_a_perfect_model_gets():
    """The split-half floor against the mean raw divergence between the true distributions and samples of N."""
    truth, n = _true_cells(), 30
    direct = [np.mean(stats.js_divergence(_people(truth, n, 100 + s).unit_means(CELLS)[1].mean(axis=0), truth)) for s in range(12)]
    floors = [agreement.noise_ceiling(_people(truth, n, seed), CELLS)["js_floor"] for seed in range(12)]
    assert np.mean(floors) == pytest.approx(np.mean(direct), rel=0.15)


def test_bias_correction_takes_the_noise_out_of_a_perfect_models_divergence():
    truth = _true_cells()
    people = _people(truth, 30, 5)
    perfect = agreement.agreement(people, truth, CELLS)
    assert perfect["js_raw"] > 0.03  # noise alone
    assert abs(perfect["js_corrected"]) < perfect["js_raw"] / 3
    assert perfect["js_lower"] <= perfect["js_corrected"] <= perfect["js_upper"]
    assert perfect["r_lower"] <= perfect["r_corrected"] <= perfect["r_upper"] and perfect["r_corrected"] > perfect["r_raw"]
    worse = agreement.agreement(people, np.roll(truth, 1, axis=1), CELLS)
    assert worse["js_corrected"] > perfect["js_upper"]


def test_a_model_is_resampled_over_its_items():
    truth = _true_cells()
    people = _people(truth, 40, 6)
    rng = np.random.default_rng(2)
    cells, values, items = [], [], []
    for item in range(6):
        for c, dist in zip(CELLS, truth):
            v = np.clip(dist + rng.normal(0, 0.05, len(OPTIONS)), 1e-3, None)
            cells.append(c)
            values.append(v / v.sum())
            items.append(f"item{item}")
    model = Responses(OPTIONS, cells, np.array(values), np.array(items), "scenario item")
    with_items = agreement.agreement(people, model, CELLS)
    fixed = agreement.agreement(people, model.unit_means(CELLS)[1].mean(axis=0), CELLS)
    assert with_items["js_raw"] == pytest.approx(fixed["js_raw"])
    assert (with_items["js_upper"] - with_items["js_lower"]) > (fixed["js_upper"] - fixed["js_lower"])  # item noise counted


def test_baselines_and_the_humans_own_distribution(tmp_path):
    human = load_human_table(2, write_human2(tmp_path / "h2.csv")).frame
    people = human2_responses(human)
    base = agreement.baselines(people, STUDY2_CELLS)
    assert np.allclose(base["uniform"], 1 / 8)
    state0 = [STUDY2_CELLS.index((g, 0)) for g in ("informational", "social", "both")]
    pooled = np.mean([people.in_cell((g, 0)).mean(axis=0) for g in ("informational", "social", "both")], axis=0)
    assert np.allclose(base["blind"][state0], pooled)  # goal-blind: the same distribution for every goal at a state
    own = np.array([people.in_cell(c).mean(axis=0) for c in STUDY2_CELLS])
    result = agreement.agreement(people, own, STUDY2_CELLS)
    assert result["cells"] == 12 and result["js_raw"] == pytest.approx(0.0, abs=1e-12) and result["r_raw"] == pytest.approx(1.0)
    uniform = agreement.agreement(people, base["uniform"], STUDY2_CELLS)
    from scipy.spatial.distance import jensenshannon

    by_hand = np.mean([jensenshannon(people.in_cell(c).mean(axis=0), np.full(8, 1 / 8), base=2) ** 2 for c in STUDY2_CELLS])
    assert uniform["js_raw"] == pytest.approx(by_hand) and np.isnan(uniform["r_raw"])  # a constant has no correlation


@pytest.mark.parametrize("participants", [2, 3, 5])
def test_a_tiny_pilot_gets_intervals_that_hold_their_estimates(participants):
    """With a handful of participants many resamples are degenerate (r = +-1); the corrected values stay in their intervals."""
    truth = _true_cells()
    people = _people(truth, participants, 9)
    result = agreement.agreement(people, np.roll(truth, 2, axis=1), CELLS)
    for name in ("js", "r"):
        estimate, low, high = result[f"{name}_corrected"], result[f"{name}_lower"], result[f"{name}_upper"]
        assert np.isnan(estimate) or low <= estimate <= high
    assert np.isnan(agreement.noise_ceiling(people, CELLS)["reliability"]) == (participants < 4)
