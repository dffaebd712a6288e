"""Derived Study 2 columns: Goal_simplified from Goal, State_number from State."""

from __future__ import annotations

import pytest

from steps.derive import DerivationError, goal_category, hearts_count


@pytest.fixture
def goal_rule(study2):
    rule = study2.derived["Goal_simplified"]
    return {"cues": rule["cues"], "negations": rule["negations"]}


@pytest.mark.parametrize("goal,expected", [
    pytest.param("Bob wanted to make Ann feel good, but not necessarily give informative feedback.", "social",
                 id="social-with-negated-info"),
    pytest.param("Bob wanted to give as accurate and informative feedback as possible, but not necessarily make Ann feel good.",
                 "informational", id="info-with-negated-social"),
    pytest.param("Bob wanted to BOTH make Ann feel good AND give accurate and informative feedback.", "both", id="both"),
    pytest.param("Bob wanted to make Ann feel good.", "social", id="plain-social"),
    pytest.param("Bob wanted to give Ann honest feedback.", "informational", id="plain-informational"),
    pytest.param("bob wanted to be informative and make ann feel good", "both", id="lowercase-both"),
])
def test_goal_category(goal_rule, goal, expected):
    assert goal_category(goal, **goal_rule) == expected


def test_unknown_goal_template(goal_rule):
    with pytest.raises(DerivationError, match="unknown Goal template"):
        goal_category("Bob wanted to leave early.", **goal_rule)


@pytest.mark.parametrize("state,expected", [("0 hearts", 0), ("1 heart", 1), ("2 hearts", 2), (" 3 Hearts ", 3), ("2", 2)])
def test_hearts_count(state, expected):
    assert hearts_count(state) == expected


@pytest.mark.parametrize("state", ["4 hearts", "-1 hearts", "two hearts", "2 stars", ""])
def test_hearts_count_rejects(state):
    with pytest.raises(DerivationError):
        hearts_count(state)
