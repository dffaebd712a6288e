"""Validation: clean outputs pass; each kind of corruption is caught by its own check or flag."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.cli import main
from steps.validate import validate_outputs
from tests.fakes.fake_openai_server import FakeOpenAIServer


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """Real tables of a run against the FAKE server: (raw, structured, probabilities) per study."""
    out = tmp_path_factory.mktemp("run")
    with FakeOpenAIServer() as server:
        assert main(["run", "--endpoint", f"fake-model={server.url}", "--extractor-url", server.url, "--extractor-model", "fake-model",
                     "--stages", "query,extract,probabilities", "--output", str(out)]) == 0
    (run_dir,) = out.iterdir()
    read = lambda sub, name: pd.read_parquet(run_dir / sub / f"fake-model_{name}.parquet")  # noqa: E731
    return {n: (read("exp1", f"study{n}_raw_responses"), read("structured", f"study{n}_structured"),
                 read("exp2", f"study{n}_probabilities"))
            for n in (1, 2)}


def _validate(study, raw, structured, probs, rows=None):
    return validate_outputs("fake-model", study, rows or {1: 6, 2: 8}[study], 1, raw, structured, probs)


def test_clean_outputs_pass(outputs):
    for study, tables in outputs.items():
        result = _validate(study, *tables)
        assert result.passed, [c for c in result.checks if not c.passed]
        assert len(result.checks) == 8


def _failed_checks(result):
    return {c.name: c.detail for c in result.checks if not c.passed}


def test_a_code_paired_with_another_answer_is_caught(outputs):
    """Two runs on one store once left codes from one run's answers next to the other run's answers."""
    raw, structured, probs = outputs[2]
    other = raw.copy()
    other.loc[other.row_index == 2, "model_response"] = "It was terrible."
    failed = _failed_checks(_validate(2, other, structured, probs))
    assert "row 2 replication 0: coded from an answer that is not" in failed["structured: coded from the raw responses' own answers"]
    recoded = structured.copy()
    amazing = recoded.loc[recoded.row_index == 4, "Assessment"].item() == "amazing"
    recoded.loc[recoded.row_index == 4, "response_cleaned"] = "It was bad" if amazing else "It was amazing"
    failed = _failed_checks(_validate(2, raw, recoded, probs))
    assert "row 4: response_cleaned" in failed["structured: coded from the raw responses' own answers"]


@pytest.mark.parametrize("study, column", [(1, "state2_option_mass"), (1, "knowledge_option_mass"), (2, "option_mass")])
def test_an_option_mass_above_1_is_caught(outputs, study, column):
    """A token log-probability of +3.0 once gave an 'ok' row with option mass 21 that validation passed."""
    raw, structured, probs = outputs[study]
    bad = probs.copy()
    bad.loc[bad.row_index == 1, column] = 21.0
    failed = _failed_checks(_validate(study, raw, structured, bad))
    assert f"row 1: {column} is 21.0, outside (0, 1]" in failed["probabilities: option masses in (0, 1], failed rows empty"]


def test_a_failed_row_with_probabilities_is_caught(outputs):
    raw, structured, probs = outputs[2]
    bad = probs.copy()
    bad.loc[bad.row_index == 3, "status"] = "failed"
    failed = _failed_checks(_validate(2, raw, structured, bad))
    assert "row 3: failed but has probabilities filled in" in failed["probabilities: option masses in (0, 1], failed rows empty"]


def test_row_count_mismatch(outputs):
    raw, structured, probs = outputs[1]
    failed = _failed_checks(_validate(1, raw.iloc[:-1], structured, probs))
    assert "missing row ids [(5, 0)]" in failed["raw_responses: row ids and count"]


def test_duplicate_row_id(outputs):
    raw, structured, probs = outputs[2]
    failed = _failed_checks(_validate(2, raw, pd.concat([structured, structured.iloc[[0]]]), probs))
    assert "duplicate row ids [(0, 0)]" in failed["structured: row ids and count"]


def test_probability_out_of_range(outputs):
    raw, structured, probs = outputs[1]
    probs = probs.copy()
    probs.loc[2, "state1_prob_50"] = 1.5
    failed = _failed_checks(_validate(1, raw, structured, probs))
    assert "row 2: state1 probability outside [0, 1]" in failed["probabilities: in [0, 1] and summing to 1"]


def test_distribution_not_summing_to_one(outputs):
    raw, structured, probs = outputs[2]
    probs = probs.copy()
    probs.loc[3, "prob_was_good"] = probs.loc[3, "prob_was_good"] * 0.5
    detail = _failed_checks(_validate(2, raw, structured, probs))["probabilities: in [0, 1] and summing to 1"]
    assert "row 3: joint sums to" in detail and "row 3: prob_was is not the sum of the joint" in detail


def test_missing_probability(outputs):
    raw, structured, probs = outputs[1]
    probs = probs.copy()
    probs.loc[0, "prob_knowledge_no"] = np.nan
    assert "row 0: knowledge" in _failed_checks(_validate(1, raw, structured, probs))["probabilities: in [0, 1] and summing to 1"]


def test_structured_field_outside_schema(outputs):
    raw, structured, probs = outputs[1]
    structured = structured.copy()
    structured["Knowledge_A"] = structured["Knowledge_A"].astype(object)
    structured.loc[1, "Knowledge_A"] = "maybe"
    structured.loc[2, "Prior_A"] = 7
    detail = _failed_checks(_validate(1, raw, structured, probs))["structured: fields valid against schemas/"]
    assert "row 1: Knowledge_A" in detail and "row 2: Prior_A" in detail


def test_empty_answer_in_an_ok_row(outputs):
    raw, structured, probs = outputs[2]
    raw = raw.copy()
    raw.loc[4, "model_response"] = "  "
    failed = _failed_checks(_validate(2, raw, structured, probs))
    assert "row 4: empty model_response" in failed["raw_responses: no missing answers in ok rows"]


def _flags(result, flag):
    return [f for f in result.flags if f["flag"] == flag]


def test_review_flags(outputs):
    raw, structured, probs = outputs[1]
    raw, structured, probs = raw.copy(), structured.copy(), probs.copy()
    raw.loc[0, ["status", "error"]] = ["failed", "HTTP 500: boom"]
    structured.loc[1, "probability_0"] = structured.loc[1, "probability_0"] + 5
    structured.loc[2, "extraction_confidence"] = 0.3
    probs.loc[3, "low_option_mass"] = True
    result = _validate(1, raw, structured, probs)
    assert result.passed  # flags are for review, not failures
    assert _flags(result, "query_failed")[0]["reason"] == "HTTP 500: boom"
    assert _flags(result, "bets_not_100")[0]["row_index"] == 1
    assert _flags(result, "low_extraction_confidence")[0]["row_index"] == 2
    probs_flagged = {f["row_index"] for f in _flags(result, "low_option_mass")}
    assert 3 in probs_flagged and probs_flagged == set(probs.loc[probs.low_option_mass.astype(bool), "row_index"])


def test_exp1_exp2_disagreement(outputs):
    raw, structured, probs = outputs[2]
    probs = probs.copy()
    joint = [f"prob_{f}_{a}" for f in ("was", "wasnt") for a in ("terrible", "bad", "good", "amazing")]
    probs.loc[:, joint] = 0.0
    probs.loc[:, "prob_was_amazing"] = 1.0  # Experiment 2 now always prefers "It was amazing"
    flagged = _flags(_validate(2, raw, structured, probs), "exp1_exp2_disagree")
    expected = structured[structured.response_cleaned != "It was amazing"].row_index.tolist()
    assert sorted(f["row_index"] for f in flagged) == sorted(expected) and expected
    assert "most probable 'It was amazing'" in flagged[0]["reason"]
