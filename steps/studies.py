"""Study definitions: loaded from ``steps/study_definitions/study{n}.yaml``.

A study definition names its input schema (``schemas.inputs``), key columns, derived
columns and prompt templates. Adding a study means adding a YAML file and an input
model, not editing the steps.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml
from pydantic import BaseModel

from schemas import inputs as input_schemas
from steps.errors import ConfigError

DEFINITIONS_PACKAGE = "steps.study_definitions"


@dataclass(frozen=True)
class PromptTemplate:
    """A chat prompt: optional system text and a user text with ``{column}`` placeholders."""

    system: str
    user: str

    @property
    def hash(self) -> str:
        """First 16 hex digits of sha256 over the template's canonical JSON."""
        canonical = json.dumps({"system": self.system, "user": self.user}, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class StudySpec:
    """Everything the steps need to know about one study."""

    number: int
    name: str
    input_model: type[BaseModel]
    key_columns: tuple[str, ...]
    line_break_columns: tuple[str, ...]
    derived: dict[str, dict[str, Any]] = field(default_factory=dict)
    query_prompt: PromptTemplate = PromptTemplate("", "")

    @property
    def file_columns(self) -> list[str]:
        """Columns the input CSV must have (the model's fields minus derived ones)."""
        return [c for c in self.input_model.model_fields if c not in self.derived]


def _parse(number: int, raw: dict[str, Any]) -> StudySpec:
    try:
        model = getattr(input_schemas, raw["input_model"])
        prompt = raw["query_prompt"]
        return StudySpec(
            number=int(raw["number"]),
            name=str(raw["name"]),
            input_model=model,
            key_columns=tuple(raw["key_columns"]),
            line_break_columns=tuple(raw.get("line_break_columns", [])),
            derived=dict(raw.get("derived") or {}),
            query_prompt=PromptTemplate(system=prompt.get("system", ""), user=prompt["user"]),
        )
    except (KeyError, AttributeError, TypeError) as exc:
        raise ConfigError(f"study definition study{number}.yaml is incomplete or invalid: {exc!r}") from exc


@lru_cache(maxsize=None)
def load_study(number: int) -> StudySpec:
    """Load the shipped definition of study ``number`` (1 or 2)."""
    resource = resources.files(DEFINITIONS_PACKAGE) / f"study{number}.yaml"
    if not resource.is_file():
        raise ConfigError(f"no study definition for study {number} (expected {DEFINITIONS_PACKAGE}/study{number}.yaml)")
    return _parse(number, yaml.safe_load(resource.read_text(encoding="utf-8")))


def available_studies() -> list[int]:
    """Numbers of the studies that have a shipped definition."""
    names = [p.name for p in resources.files(DEFINITIONS_PACKAGE).iterdir()]
    return sorted(int(n[5:-5]) for n in names if n.startswith("study") and n.endswith(".yaml"))
