"""Input rows of the two studies, exactly as the researchers' CSV files name them.

Field order is the seed's column order. The original spellings ``speach``/``speachQ``
are kept on purpose: they are what the real files contain.
Fields flagged ``seed_column=False`` are input columns the seed's output tables do not
list; they are carried after the seed's columns.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

_TEXT: dict[str, Any] = dict(min_length=1)


class Study1Input(BaseModel):
    """One trial of Study 1 (knowledge and scalar implicature)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    participant_id: int = Field(description="Original participant ID")
    story_shortname: str = Field(description="Story type (exams, letters, tickets, fruits, phones, seeds)", **_TEXT)
    story_setup: str = Field(description="Story context; '<br>' separates sentences in the file", **_TEXT)
    priorQ: str = Field(description="Prior question: how many of the 3 items have the property", **_TEXT)
    speach: str = Field(description="Speaker's statement (original spelling)", **_TEXT)
    speachQ: str = Field(description="Question after the statement (original spelling)", **_TEXT)
    knowledgeQ: str = Field(description="Does the speaker know exactly how many?", **_TEXT)
    access: int = Field(ge=1, le=3, description="Items the speaker looked at (1-3)")
    observe: int = Field(ge=0, le=3, description="Items the speaker reports to have the property (0-access)")

    @model_validator(mode="after")
    def _observe_within_access(self) -> "Study1Input":
        if self.observe > self.access:
            raise ValueError(f"observe ({self.observe}) cannot exceed access ({self.access}): the speaker saw only {self.access} item(s)")
        return self


GoalSimplified = Literal["informational", "social", "both"]


class Study2Input(BaseModel):
    """One trial of Study 2 (polite speech), with the two derived columns."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    Participant_ID: int = Field(description="Original participant ID")
    Domain: str = Field(description="Task domain (what the listener made or did)", **_TEXT)
    Precontext: str = Field(description="Context setup", **_TEXT)
    Scenario: str = Field(description="Full scenario", **_TEXT)
    Goal: str = Field(description="Speaker's goal, one of three sentence templates with names filled in", **_TEXT)
    State: str = Field(description="True quality as text ('0 hearts' .. '3 hearts')", **_TEXT)
    SP_Name: str = Field(description="Speaker's name", **_TEXT)
    LS_Name: str = Field(description="Listener's name", **_TEXT)
    Goal_simplified: GoalSimplified = Field(description="Derived from Goal: informational, social or both")
    State_number: int = Field(ge=0, le=3, description="Derived from State: number of hearts (0-3)")
    Utterance: str = Field(
        default="",
        description="A column of the study materials, counterbalanced over goals and states ('It was good', 'It was okay', ...); "
                    "NOT a participant's choice: human speaker data comes from a separate file (--human2)",
        json_schema_extra={"seed_column": False},
    )


def seed_columns(model: type[BaseModel]) -> list[str]:
    """Columns of ``model`` that the seed's tables list, in order."""
    return [n for n, f in model.model_fields.items()
            if not (isinstance(f.json_schema_extra, dict) and f.json_schema_extra.get("seed_column") is False)]


def extra_input_columns(model: type[BaseModel]) -> list[str]:
    """Input columns the seed's tables do not list (carried after the seed's columns)."""
    return [n for n in model.model_fields if n not in seed_columns(model)]
