"""Statistics of the human-vs-model comparison, checked against values computed by hand from known data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from steps import comparison
from steps.comparison import Responses
from steps.human import load_human_table
from tests.human_data import write_human1, write_human2


@pytest.fixture(scope="module")
def human2(tmp_path_factory):
    return load_human_table(2, write_human2(tmp_path_factory.mktemp("h") / "h2.csv")).frame


def _row(rows, **match):
    found = [r for r in rows if all(r[k] == v for k, v in match.items())]
    assert len(found) == 1, (match, found)
    return found[0]


def test_human_cell_is_the_share_of_trials_with_a_beta_interval(human2):
    rows = comparison.comparison_rows(2, None, human2)
    cell = _row(rows, cell="goal=informational, state=0", option="It was terrible")
    assert cell["value"] == pytest.approx(0.58) and cell["n"] == 50 and cell["participants"] == 50
    assert (cell["lower"], cell["upper"]) == pytest.approx((stats.beta.ppf(0.025, 30, 22), stats.beta.ppf(0.975, 30, 22)))
    # independently: the Beta(30, 22) density x^29 (1-x)^21 integrated numerically
    x = np.linspace(0, 1, 400001)
    cdf = np.cumsum(x**29 * (1 - x) ** 21)
    cdf /= cdf[-1]
    assert cell["lower"] == pytest.approx(x[np.searchsorted(cdf, 0.025)], abs=1e-4)
    assert cell["upper"] == pytest.approx(x[np.searchsorted(cdf, 0.975)], abs=1e-4)
    assert _row(rows, cell="goal=informational, state=3", option="It was amazing")["value"] == pytest.approx(0.96)
    assert _row(rows, cell="goal=informational, state=0", option="It was amazing")["value"] == 0.0
    assert len(rows) == 12 * 8 and {r["source"] for r in rows} == {"human"}


def _model_table(cells: dict, prompts_per_cell: int = 3, copies: int = 2) -> pd.DataFrame:
    """A Study 2 analysis table where every prompt of a cell has the given joint distribution, each prompt ``copies`` times."""
    rows = []
    for (goal, state), dist in cells.items():
        for prompt in range(prompts_per_cell):
            for copy in range(copies):
                row = {"model_name": "m", "Goal_simplified": goal, "State_number": state, "Domain": f"d{prompt}",
                       "Precontext": "p", "Scenario": "s", "Goal": goal, "State": str(state), "SP_Name": "a", "LS_Name": "b",
                       "Participant_ID": copy, "response_cleaned": comparison.UTTERANCES[int(np.argmax(dist))]}
                row.update(dict(zip(comparison.JOINT_COLUMNS, dist)))
                rows.append(row)
    return pd.DataFrame(rows)


def test_experiment2_counts_each_prompt_once_and_exp1_counts_answers():
    dist = np.array([0.5, 0.2, 0.1, 0.0, 0.1, 0.05, 0.05, 0.0])
    table = _model_table({("informational", 0): dist})
    rows = comparison.comparison_rows(2, table, None)
    exp2 = _row(rows, experiment="exp2_probabilities", option="It was terrible")
    assert exp2["n"] == 3 and exp2["value"] == pytest.approx(0.5) and exp2["source"] == "model" and exp2["model"] == "m"
    exp1 = _row(rows, experiment="exp1_coded", option="It was terrible")
    assert exp1["n"] == 6 and exp1["value"] == 1.0
    # Beta(7, 1) has CDF x^7: the equal-tailed interval in closed form
    assert (exp1["lower"], exp1["upper"]) == pytest.approx((0.025 ** (1 / 7), 0.975 ** (1 / 7)))
    assert exp2["lower"] == exp2["upper"] == pytest.approx(0.5)  # every prompt says 0.5: no spread


def test_agreement_is_zero_divergence_for_the_humans_own_distribution(human2):
    people = comparison.human2_responses(human2)
    cells = comparison.STUDY2_CELLS
    same = Responses(people.options, people.cells, people.values)  # the humans' own trials, as if a model
    result = comparison.agreement(people, same, cells)
    assert result["cells"] == 12 and result["js_divergence"] == pytest.approx(0.0, abs=1e-12)
    assert result["correlation"] == pytest.approx(1.0)
    assert result["js_lower"] >= 0 and result["js_upper"] > 0  # resampling participants moves the human side
    uniform = Responses(people.options, cells, np.full((len(cells), 8), 1 / 8))
    far = comparison.agreement(people, uniform, cells)
    from scipy.spatial.distance import jensenshannon

    by_hand = np.mean([jensenshannon(people.in_cell(c).mean(axis=0), np.full(8, 1 / 8), base=2) ** 2 for c in cells])
    assert far["js_divergence"] == pytest.approx(by_hand) and 0 < far["js_lower"] < far["js_upper"]


def test_js_divergence_bounds():
    assert comparison.js_divergence(np.array([0.5, 0.5, 0.0]), np.array([0.5, 0.5, 0.0])) == pytest.approx(0.0)
    assert comparison.js_divergence(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(1.0)


@pytest.mark.parametrize("d, p", [
    pytest.param([1, 1, 1, 1, 1], 1 / 32, id="all-positive-exact"),
    pytest.param([0, 0, 0], 1.0, id="no-difference"),
    pytest.param([1, -1], 0.75, id="balanced"),
])
def test_sign_flip_p_values(d, p):
    assert comparison.sign_flip_p(np.array(d, float)) == pytest.approx(p)


def test_findings_on_bets_built_to_show_the_upper_bounded_reading(tmp_path):
    human = load_human_table(1, write_human1(tmp_path / "h1.csv")).frame
    bets = comparison.human1_responses(human, "bet")
    table = comparison.findings_table({"humans": bets})
    verdict = {(r.access, r.observe, r["paper (Goodman & Stuhlmueller 2013)"]): r.verdict for _, r in table.iterrows()}
    assert verdict[(3, 2, "bet on 2 > bet on 3")] == "reproduced"
    assert verdict[(3, 1, "bet on 1 > bet on 2")] == "reproduced"
    assert verdict[(2, 2, "bet on 2 not > bet on 3")] == "reproduced"  # 40 vs ~59: not greater
    assert verdict[(1, 1, "bet on 1 not > bet on 2")] == "not reproduced"  # 40 vs 0: greater, unlike the paper
    row = table[(table.access == 3) & (table.observe == 2)].iloc[0]
    assert row.n == 20 and row.mean_difference == pytest.approx(np.mean([(80 + p % 5 - (20 - p % 5)) / 100 for p in range(20)]))
    assert row.p_one_sided < 0.001


def test_too_few_trials_are_not_tested():
    few = Responses(comparison.BET_OPTIONS, [(3, 2), (3, 2)], np.array([[0, 0, 0.9, 0.1], [0, 0, 0.8, 0.2]]))
    table = comparison.findings_table({"m": few})
    assert table[(table.access == 3) & (table.observe == 2)].verdict.iloc[0].startswith("not testable (n=2")


def test_comparison_frame_rejects_an_impossible_row():
    with pytest.raises(ValueError):
        comparison.comparison_frame([{"study": 2, "measure": "utterance", "cell": "x", "option": "o", "source": "human", "n": 1,
                                      "value": 1.5}])
