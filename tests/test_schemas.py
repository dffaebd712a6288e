"""Schemas are the single source of truth: column order, exported JSON Schema files."""

from __future__ import annotations

import pytest

from schemas.export import EXPORTED, JSON_DIR, render
from schemas.inputs import Study1Input, Study2Input
from schemas.raw_responses import raw_response_columns

SEED_RESPONSE_COLUMNS = ["model_name", "model_response", "response_timestamp", "processing_time_ms"]


@pytest.mark.parametrize("name", sorted(EXPORTED))
def test_exported_json_schema_matches_models(name):
    committed = (JSON_DIR / f"{name}.schema.json").read_text(encoding="utf-8")
    assert committed == render(EXPORTED[name]), f"schemas/json/{name}.schema.json is stale: run python -m schemas.export"


def test_study1_raw_columns_start_with_the_seeds_table():
    seed = ["participant_id", "story_shortname", "story_setup", "priorQ", "speach", "speachQ", "knowledgeQ", "access", "observe"]
    assert raw_response_columns(Study1Input)[:13] == seed + SEED_RESPONSE_COLUMNS


def test_study2_raw_columns_start_with_the_seeds_table():
    seed = ["Participant_ID", "Domain", "Precontext", "Scenario", "Goal", "State", "SP_Name", "LS_Name", "Goal_simplified", "State_number"]
    columns = raw_response_columns(Study2Input)
    assert columns[:14] == seed + SEED_RESPONSE_COLUMNS
    assert "Utterance" in columns[14:]  # the materials column is kept, after the seed's columns
