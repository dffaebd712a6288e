"""Study 1 exclusions: which rows fail the researchers' checks, per source, and how they are counted."""

from __future__ import annotations

import pandas as pd
import pytest

from steps import exclusions
from steps.responses import PROMPT_COLUMNS

ROWS = pd.DataFrame({
    "model_name": ["m"] * 5,
    "story_shortname": ["exams"] * 5, "story_setup": ["s"] * 5, "priorQ": ["q"] * 5, "speachQ": ["q"] * 5, "knowledgeQ": ["q"] * 5,
    "speach": ["a", "b", "c", "d", "d"], "participant_id": [1, 2, 3, 4, 5],
    "access": [3, 3, 2, 1, 1], "observe": [2, 2, 1, 1, 1],
    "Prior_A": [3, 2, 3, None, 3],
    "Knowledge_A": ["yes", "yes", "yes", "no", None],
    "prob_knowledge_yes": [0.9, 0.9, 0.2, 0.7, 0.7], "prob_knowledge_no": [0.1, 0.1, 0.8, 0.3, 0.3],
})


def test_coded_answers_fail_the_checks_they_contradict():
    fails = exclusions.failures(ROWS, "exp1_coded")
    assert fails.prior.tolist() == [False, True, False, pd.NA, False]
    assert fails.knowledge.tolist() == [False, False, True, False, pd.NA]  # access 2 but 'yes'
    assert exclusions.kept(ROWS, "exp1_coded", ["prior", "knowledge"]).tolist() == [True, False, False, True, True]
    assert exclusions.kept(ROWS, "exp1_coded", []).all()


def test_experiment2_is_checked_on_its_more_probable_knowledge_answer_only():
    fails = exclusions.failures(ROWS, "exp2_probabilities")
    assert fails.prior.isna().all()  # Experiment 2 does not ask the prior question
    assert fails.knowledge.tolist() == [False, False, False, True, True]  # access 1 but 'yes' more probable


def test_counts_per_source_and_an_unknown_check():
    counts = exclusions.exclusion_counts(ROWS, None, ["knowledge"], PROMPT_COLUMNS[1])
    exp1, exp2 = counts.iloc[0], counts.iloc[1]
    assert (exp1["trials"], exp1["fail knowledge"], exp1["unchecked knowledge"], exp1["excluded"]) == (5, 1, 1, 1)
    assert exp2["trials"] == 4 and exp2["excluded"] == 1  # rows 4 and 5 are one prompt
    with pytest.raises(ValueError, match="unknown Study 1 check"):
        exclusions.kept(ROWS, "exp1_coded", ["story"])
