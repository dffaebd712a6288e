"""Structured extraction: the fields asked of the LLM extractor, and ``{model}_study{n}_structured``.

``Study1Fields``/``Study2Fields`` are the JSON Schema sent to the extractor (every field
may be null: "not stated" is a valid answer). The output table is the raw-responses
table plus the seed's §2/§5 columns, then extraction provenance.

``extraction_confidence`` (0-1) is the lowest field-group confidence of the row, an
ordinal level of evidence (not a calibrated probability):
1.0 the deterministic parser read a labelled, unambiguous answer; 0.9 the LLM tier's
value agrees with an unlabelled mention the parser saw; 0.6 only the LLM tier found it;
0.3 the LLM tier's value contradicts the parser's unlabelled mention; 0.0 no valid value.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, create_model

from schemas.inputs import Study1Input, Study2Input
from schemas.raw_responses import raw_response_row_model

CONFIDENCE_PARSER = 1.0
CONFIDENCE_LLM_AGREES = 0.9
CONFIDENCE_LLM_ONLY = 0.6
CONFIDENCE_LLM_CONTRADICTS = 0.3
CONFIDENCE_NONE = 0.0


class Study1Fields(BaseModel):
    """What a Study 1 answer says (null when it does not say)."""

    model_config = ConfigDict(extra="forbid")

    Prior_A: Optional[int] = Field(None, ge=0, le=3, description="Answer to the initial question: how many of the 3 items (0-3)")
    probability_0: Optional[int] = Field(None, ge=0, le=100, description="Bet or percentage on 0 of 3 items")
    probability_1: Optional[int] = Field(None, ge=0, le=100, description="Bet or percentage on 1 of 3 items")
    probability_2: Optional[int] = Field(None, ge=0, le=100, description="Bet or percentage on 2 of 3 items")
    probability_3: Optional[int] = Field(None, ge=0, le=100, description="Bet or percentage on 3 of 3 items")
    Knowledge_A: Optional[Literal["yes", "no"]] = Field(None, description="Does the speaker know exactly how many? yes or no")


class Study2Fields(BaseModel):
    """Which of the 8 utterances a Study 2 answer gives (null when none)."""

    model_config = ConfigDict(extra="forbid")

    Was_Wasnt: Optional[Literal["was", "wasn't"]] = Field(None, description="Frame of the utterance")
    Assessment: Optional[Literal["terrible", "bad", "good", "amazing"]] = Field(None, description="Quality word of the utterance")
    response_cleaned: Optional[str] = Field(None, description="The utterance as 'It was X' or 'It wasn't X'")


EXTRACTION_FIELDS: dict[int, type[BaseModel]] = {1: Study1Fields, 2: Study2Fields}


def _extraction_columns() -> dict:
    return {
        "extraction_confidence": (float, Field(ge=0.0, le=1.0, description="Lowest field confidence of the row (see module docstring)")),
        "extraction_errors": (Optional[str], Field(None, description="What was wrong or uncertain, per field; empty when nothing")),
        "extraction_method": (Literal["parser", "llm", "parser+llm", "none"], Field(description="Which tier produced the fields")),
        "extractor_model": (Optional[str], Field(None, description="The LLM extractor's model, when the LLM tier was used")),
        "extraction_status": (Literal["ok", "partial", "not_found", "failed", "skipped"], Field(
            description="ok: every field found; partial: some; not_found: the answer states none of them; failed: the LLM "
                        "extractor could not be used (error or invalid reply twice; retried on a re-run); skipped: no answer")),
    }


def _structured(input_model: type[BaseModel], study: int) -> type[BaseModel]:
    raw = raw_response_row_model(input_model)
    fields: dict[str, Any] = {n: (f.annotation, f) for n, f in raw.model_fields.items()}
    fields.update({n: (f.annotation, f) for n, f in EXTRACTION_FIELDS[study].model_fields.items()})
    fields.update(_extraction_columns())
    name = f"Study{study}Structured"
    return create_model(name, __config__=ConfigDict(extra="forbid"), __doc__=f"One row of {name}.", **fields)


Study1Structured = _structured(Study1Input, 1)
Study2Structured = _structured(Study2Input, 2)
STRUCTURED_ROW_MODELS: dict[int, type[BaseModel]] = {1: Study1Structured, 2: Study2Structured}
