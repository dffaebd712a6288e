"""Study definitions: loaded from ``steps/study_definitions/study{n}.yaml``.

A study definition names its input schema (``schemas.inputs``), derived columns and
prompt templates. The prompts, rules and options live in the YAML file, but a new study
also needs code: an input model (``schemas.inputs``), extraction fields
(``schemas.structured.EXTRACTION_FIELDS``, ``steps.extract.FIELD_GROUPS``), an answer
parser (``steps.parse_answers.PARSERS``), a probability summary
(``steps.probabilities.SUMMARIES``, ``schemas.probabilities``) and its validation checks
(``steps.validate.distribution_columns``), which are keyed by study number today.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
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

    @cached_property
    def hash(self) -> str:
        """First 16 hex digits of sha256 over the template's canonical JSON (computed once: every row's record carries it)."""
        canonical = json.dumps({"system": self.system, "user": self.user}, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ProbabilityQuestion:
    """One Experiment 2 question: a prompt, its labelled answer options, and repeats.

    ``options`` maps a label to its surface forms (their probabilities add up);
    ``repeat`` names a placeholder and its values (Study 1 asks once per state).
    """

    name: str
    template: PromptTemplate
    options: dict[str, tuple[str, ...]]
    repeat: dict[str, tuple] = field(default_factory=dict)

    def instances(self) -> list[tuple[str, dict[str, Any]]]:
        """(instance name, extra placeholder values) for each time the question is asked."""
        if not self.repeat:
            return [(self.name, {})]
        ((key, values),) = self.repeat.items()
        return [(f"{self.name}{v}", {key: v}) for v in values]


@dataclass(frozen=True)
class StudySpec:
    """Everything the steps need to know about one study."""

    number: int
    name: str
    input_model: type[BaseModel]
    line_break_columns: tuple[str, ...]
    derived: dict[str, dict[str, Any]] = field(default_factory=dict)
    query_prompt: PromptTemplate = PromptTemplate("", "")
    probability_questions: tuple[ProbabilityQuestion, ...] = ()
    probability_summary: str = ""
    extraction_prompt: PromptTemplate = PromptTemplate("", "")

    @cached_property
    def probability_hash(self) -> str:
        """First 16 hex digits of sha256 over every Experiment 2 prompt and option list."""
        canonical = json.dumps(
            [[q.name, q.template.system, q.template.user, q.options, q.repeat] for q in self.probability_questions],
            sort_keys=True,
        )
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

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
            line_break_columns=tuple(raw.get("line_break_columns", [])),
            derived=dict(raw.get("derived") or {}),
            query_prompt=PromptTemplate(system=prompt.get("system", ""), user=prompt["user"]),
            probability_questions=tuple(
                ProbabilityQuestion(
                    name=q["name"],
                    template=PromptTemplate(system=q.get("system", ""), user=q["user"]),
                    options={str(label): tuple(forms) for label, forms in q["options"].items()},
                    repeat={k: tuple(v) for k, v in (q.get("repeat") or {}).items()},
                )
                for q in raw.get("probability_questions", [])
            ),
            probability_summary=raw.get("probability_summary", ""),
            extraction_prompt=PromptTemplate(**raw["extraction_prompt"]) if raw.get("extraction_prompt") else PromptTemplate("", ""),
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
