"""The long human-vs-model table: per-cell values, units and intervals, checked against values computed by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from steps import comparison
from steps.human import load_human_table
from steps.responses import JOINT_COLUMNS, UTTERANCES
from tests.human_data import write_human1, write_human2


@pytest.fixture(scope="module")
def human2(tmp_path_factory):
    return load_human_table(2, write_human2(tmp_path_factory.mktemp("h") / "h2.csv")).frame


def _row(rows, **match):
    found = [r for r in rows if all(r[k] == v for k, v in match.items())]
    assert len(found) == 1, (match, found)
    return found[0]


def test_human_cell_is_the_share_of_trials_with_a_jeffreys_interval(human2):
    rows = comparison.comparison_rows(2, None, human2)
    cell = _row(rows, cell="goal=informational, state=0", option="It was terrible")
    assert cell["value"] == pytest.approx(0.58) and cell["n"] == 50 and cell["participants"] == 50
    assert cell["unit"] == "participant trial" and cell["interval"].startswith("Jeffreys")
    assert (cell["lower"], cell["upper"]) == pytest.approx((stats.beta.ppf(0.025, 29.5, 21.5), stats.beta.ppf(0.975, 29.5, 21.5)))
    # independently: the Beta(29.5, 21.5) density x^28.5 (1-x)^20.5 integrated numerically
    x = np.linspace(0, 1, 400001)
    cdf = np.cumsum(x**28.5 * (1 - x) ** 20.5)
    cdf /= cdf[-1]
    assert cell["lower"] == pytest.approx(x[np.searchsorted(cdf, 0.025)], abs=1e-4)
    assert cell["upper"] == pytest.approx(x[np.searchsorted(cdf, 0.975)], abs=1e-4)
    never = _row(rows, cell="goal=informational, state=0", option="It was amazing")
    assert never["value"] == 0.0 and never["lower"] == 0.0 and never["upper"] > 0  # the interval holds its 0
    assert len(rows) == 12 * 8 and {r["source"] for r in rows} == {"human"}


def _model_table(cells: dict, items: int = 3, copies: int = 2) -> pd.DataFrame:
    """A Study 2 analysis table: item i of a cell has joint distribution ``cells[cell](i)``; each prompt ``copies`` times."""
    rows = []
    for (goal, state), dist_of in cells.items():
        for item in range(items):
            dist = dist_of(item)
            for copy in range(copies):
                row = {"model_name": "m", "Goal_simplified": goal, "State_number": state, "Domain": f"d{item}",
                       "Precontext": "p", "Scenario": "s", "Goal": goal, "State": str(state), "SP_Name": "a", "LS_Name": "b",
                       "Participant_ID": copy, "response_cleaned": UTTERANCES[int(np.argmax(dist))] if copy == 0 else UTTERANCES[0]}
                row.update(dict(zip(JOINT_COLUMNS, dist)))
                rows.append(row)
    return pd.DataFrame(rows)


def test_models_are_summarised_over_items():
    dist = [0.5, 0.2, 0.1, 0.0, 0.1, 0.05, 0.05, 0.0]
    table = _model_table({("informational", 0): lambda item: dist})
    rows = comparison.comparison_rows(2, table, None)
    exp2 = _row(rows, experiment="exp2_probabilities", option="It was terrible")
    assert exp2["n"] == 3 and exp2["unit"] == "scenario item" and exp2["value"] == pytest.approx(0.5) and exp2["model"] == "m"
    assert exp2["lower"] == exp2["upper"] == pytest.approx(0.5)  # every item says 0.5: no spread
    exp1 = _row(rows, experiment="exp1_coded", option="It was terrible")
    assert exp1["n"] == 3 and exp1["value"] == pytest.approx(1.0)  # both copies of every item say "It was terrible"


def test_replications_are_averaged_within_the_item_before_the_items_are_resampled():
    items = [[1, 0, 0, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0, 0, 0], [0, 0, 0, 1, 0, 0, 0, 0]]
    table = _model_table({("social", 2): lambda item: items[item]}, items=4)
    table.loc[table.Participant_ID == 1, "response_cleaned"] = "It was terrible"  # every item's second answer
    rows = comparison.comparison_rows(2, table, None)
    terrible = _row(rows, experiment="exp1_coded", option="It was terrible")
    # item 0: both answers terrible (1.0); items 1-3: one of two (0.5): mean over the 4 items, not over the 8 answers
    assert terrible["n"] == 4 and terrible["value"] == pytest.approx((1.0 + 0.5 * 3) / 4)
    assert terrible["lower"] <= terrible["value"] <= terrible["upper"] and terrible["interval"].startswith("bootstrap over scenario items")


def test_study1_humans_and_exclusions(tmp_path):
    human = load_human_table(1, write_human1(tmp_path / "h1.csv")).frame
    rows = comparison.comparison_rows(1, None, human)
    bet = _row(rows, measure="bet", cell="access=3, observe=2", option="2")
    assert bet["unit"] == "participant" and bet["n"] == 20
    assert bet["value"] == pytest.approx(np.mean([(80 + p % 5) / 100 for p in range(20)]))
    excluded = comparison.comparison_rows(1, None, human, ["prior"])  # every 4th participant answered 2
    assert _row(excluded, measure="bet", cell="access=3, observe=2", option="2")["n"] == 15
    knowledge = _row(rows, measure="knowledge", cell="access=3, observe=2", option="yes")
    assert knowledge["value"] == 1.0 and knowledge["upper"] == 1.0 and knowledge["lower"] < 1.0


def test_comparison_frame_rejects_an_impossible_row():
    with pytest.raises(ValueError):
        comparison.comparison_frame([{"study": 2, "measure": "utterance", "cell": "x", "option": "o", "source": "human", "n": 1,
                                      "unit": "participant", "value": 1.5}])
