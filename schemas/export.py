"""Generate ``schemas/json/*.schema.json`` from the pydantic models.

Regenerate after changing a schema: ``python -m schemas.export``. CI never does;
``tests/test_schemas.py`` fails when the committed files drift from the models.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from schemas.fits import FitParameterRow, FitPredictionRow
from schemas.human import ComparisonRow, Human1Trial, Human2Trial
from schemas.inputs import Study1Input, Study2Input
from schemas.probabilities import Study1Probabilities, Study2Probabilities
from schemas.raw_responses import Study1RawResponse, Study2RawResponse
from schemas.settings import ModelSpec, SamplingSettings
from schemas.structured import Study1Fields, Study1Structured, Study2Fields, Study2Structured

JSON_DIR = Path(__file__).parent / "json"
EXPORTED: dict[str, type[BaseModel]] = {
    "study1_input": Study1Input,
    "study2_input": Study2Input,
    "study1_raw_responses": Study1RawResponse,
    "study2_raw_responses": Study2RawResponse,
    "study1_probabilities": Study1Probabilities,
    "study2_probabilities": Study2Probabilities,
    "study1_structured": Study1Structured,
    "study2_structured": Study2Structured,
    "study1_extraction_fields": Study1Fields,
    "study2_extraction_fields": Study2Fields,
    "study1_human_trial": Human1Trial,
    "study2_human_trial": Human2Trial,
    "human_model_comparison": ComparisonRow,
    "rsa_fit_parameters": FitParameterRow,
    "rsa_fit_predictions": FitPredictionRow,
    "model_registry_entry": ModelSpec,
    "sampling_settings": SamplingSettings,
}


def render(model: type[BaseModel]) -> str:
    """The JSON Schema text of ``model`` as committed (sorted keys, trailing newline)."""
    return json.dumps(model.model_json_schema(by_alias=True), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> None:
    """Regenerate schemas/json/<name>.schema.json from the pydantic models (``python -m schemas.export``)."""
    JSON_DIR.mkdir(exist_ok=True)
    for name, model in EXPORTED.items():
        (JSON_DIR / f"{name}.schema.json").write_text(render(model), encoding="utf-8")
        print(f"wrote schemas/json/{name}.schema.json")


if __name__ == "__main__":
    main()
