"""Structured extraction: code every raw response into the study's fields (seed §2 / §5).

Tier 1 is the deterministic parser (``steps.parse_answers``). Fields it cannot settle
go to tier 2, an LLM extractor behind any OpenAI-compatible endpoint (hosted DeepSeek,
a self-hosted model, or the embedded model), asked for JSON constrained by the fields'
JSON Schema where the server supports it, validated with pydantic, and asked once more
with the validation error when the reply is invalid. :func:`combine` merges the tiers
and assigns the documented confidence levels (``schemas.structured``).
"""

from __future__ import annotations

import json
import re
import typing
from dataclasses import dataclass
from typing import Any, Literal, Optional

import pandas as pd
from pydantic import BaseModel, ValidationError

from schemas.structured import (
    CONFIDENCE_LLM_AGREES,
    CONFIDENCE_LLM_CONTRADICTS,
    CONFIDENCE_LLM_ONLY,
    CONFIDENCE_NONE,
    CONFIDENCE_PARSER,
    EXTRACTION_FIELDS,
)
from steps.checkpoint import AnyCheckpoint
from steps.llm_client import LLMClient, RequestFailed
from steps.outcome import NoProgress, RowProgress, StepOutcome, record_key, run_resumable
from steps.parse_answers import PARSERS, Parsed, canonical_utterance
from steps.studies import StudySpec
from steps.tables import plain_records

# How the extractor is asked for JSON; the one place the choices are spelled (options, config and workflow read these).
JsonMode = Literal["json_object", "json_schema", "llama_schema", "none"]
JSON_MODES: tuple[str, ...] = typing.get_args(JsonMode)
DEFAULT_JSON_MODE: JsonMode = "json_object"
EMBEDDED_JSON_MODE: JsonMode = "llama_schema"  # the embedded llama.cpp server: a schema inside json_object, grammar-constrained
JSON_MODE_HELP = ("How the extractor is asked for JSON: json_object (DeepSeek API), json_schema (vLLM/OpenAI), "
                  "llama_schema (llama.cpp: schema-constrained), none")
CHAT_PATH = "/v1/chat/completions"
EXTRACTION_MAX_TOKENS = 300

# field groups: a group is settled (and scored) as a whole
FIELD_GROUPS: dict[int, dict[str, tuple[str, ...]]] = {
    1: {"Prior_A": ("Prior_A",), "probabilities": tuple(f"probability_{s}" for s in range(4)), "Knowledge_A": ("Knowledge_A",)},
    2: {"Was_Wasnt": ("Was_Wasnt",), "Assessment": ("Assessment",)},
}


@dataclass(frozen=True)
class Extractor:
    """The LLM tier: where it is and how to ask it for JSON."""

    client: LLMClient
    model: str
    json_mode: JsonMode


def build_extraction_messages(spec: StudySpec, response: str) -> list[dict[str, str]]:
    """The chat messages asking the extractor to code ``response`` (pure)."""
    schema = json.dumps(EXTRACTION_FIELDS[spec.number].model_json_schema(), separators=(",", ":"))
    values = {"schema": schema, "response": response}
    return [
        {"role": "system", "content": spec.extraction_prompt.system.format_map(values)},
        {"role": "user", "content": spec.extraction_prompt.user.format_map(values)},
    ]


def response_format(fields: type[BaseModel], mode: JsonMode) -> Optional[dict[str, Any]]:
    """The ``response_format`` for a server: llama.cpp takes a schema inside json_object,
    vLLM/OpenAI take json_schema, DeepSeek's API only json_object."""
    schema = fields.model_json_schema()
    if mode == "llama_schema":
        return {"type": "json_object", "schema": schema}
    if mode == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": fields.__name__, "schema": schema}}
    if mode == "json_object":
        return {"type": "json_object"}
    return None


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)


def parse_extractor_reply(content: str, fields: type[BaseModel]) -> dict[str, Any]:
    """The validated fields from the extractor's reply; raises ValueError saying what is wrong.

    Accepts code fences and text around one JSON object.
    """
    fenced = _FENCE.search(content or "")
    text = fenced.group(1) if fenced else (content or "")
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        raise ValueError("the reply contains no JSON object")
    try:
        data = json.loads(text[start : end + 1])
    except json.JSONDecodeError as exc:
        raise ValueError(f"the reply is not valid JSON ({exc.msg} at character {exc.pos})") from exc
    if not isinstance(data, dict):
        raise ValueError("the reply's JSON is not an object")
    try:
        return fields.model_validate(data).model_dump()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(object)'}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"the reply does not match the schema: {problems}") from exc


async def llm_extract(extractor: Extractor, spec: StudySpec, response: str) -> tuple[Optional[dict[str, Any]], Optional[str]]:
    """(fields, None) from the LLM tier, or (None, why it failed); one retry on an invalid reply."""
    fields = EXTRACTION_FIELDS[spec.number]
    messages = build_extraction_messages(spec, response)
    fmt = response_format(fields, extractor.json_mode)
    problem = ""
    for attempt in range(2):
        payload: dict[str, Any] = {"model": extractor.model, "messages": messages, "temperature": 0.0, "max_tokens": EXTRACTION_MAX_TOKENS}
        if fmt:
            payload["response_format"] = fmt
        try:
            body = (await extractor.client.post_json(CHAT_PATH, payload)).body
            content = body["choices"][0]["message"]["content"] or ""
        except RequestFailed as exc:
            return None, f"LLM extractor request failed: {exc.reason}"
        except (KeyError, IndexError, TypeError):
            return None, "LLM extractor answered without choices[0].message.content"
        try:
            return parse_extractor_reply(content, fields), None
        except ValueError as exc:
            problem = str(exc)
            messages = messages + [
                {"role": "assistant", "content": content},
                {"role": "user", "content": f"That reply was invalid: {problem}. Reply again with only the JSON object."},
            ]
    return None, f"LLM extractor reply invalid twice: {problem}"


def combine(
    study: int, parsed: Parsed, llm: Optional[dict[str, Any]], llm_error: Optional[str], llm_failed: bool = False
) -> dict[str, Any]:
    """Merge the tiers into the output columns with confidence, errors and method (pure).

    ``llm_failed`` marks a technical failure of the LLM tier: the row's status is then
    'failed' (counted against the step's failure threshold and redone on a re-run).
    An answer that simply does not state a field is 'not_found'/'partial', not a failure.
    """
    values: dict[str, Any] = {name: None for name in EXTRACTION_FIELDS[study].model_fields}
    errors = [f"{k}: {v}" for k, v in parsed.notes.items()]
    confidences, sources = [], set()
    for group, names in FIELD_GROUPS[study].items():
        if all(n in parsed.values for n in names):
            values.update({n: parsed.values[n] for n in names})
            confidences.append(CONFIDENCE_PARSER)
            sources.add("parser")
        elif llm is not None and all(llm.get(n) is not None for n in names):
            values.update({n: llm[n] for n in names})
            hint = parsed.hints.get(group)
            if hint is None:
                confidences.append(CONFIDENCE_LLM_ONLY)
            elif all(llm[n] == hint for n in names):
                confidences.append(CONFIDENCE_LLM_AGREES)
            else:
                confidences.append(CONFIDENCE_LLM_CONTRADICTS)
                errors.append(f"{group}: the LLM extractor says {llm[names[0]]!r} but the answer mentions {hint!r}")
            sources.add("llm")
        else:
            confidences.append(CONFIDENCE_NONE)
            errors.append(f"{group}: not found" + (f" ({llm_error})" if llm_error else ""))
    if study == 1 and all(values[f"probability_{s}"] is not None for s in range(4)) and "probabilities" not in parsed.notes:
        total = sum(values[f"probability_{s}"] for s in range(4))
        if total != 100:
            errors.append(f"probabilities: bets sum to {total}, not 100 (kept as given)")
    if study == 2:
        both = values["Was_Wasnt"] is not None and values["Assessment"] is not None
        values["response_cleaned"] = canonical_utterance(values["Was_Wasnt"], values["Assessment"]) if both else None
    found = sum(c > CONFIDENCE_NONE for c in confidences)
    return {
        **values,
        "extraction_confidence": min(confidences),
        "extraction_errors": "; ".join(dict.fromkeys(errors)) or None,
        "extraction_method": "+".join(sorted(sources)) if sources else "none",
        "extraction_status": "ok" if found == len(confidences) else ("failed" if llm_failed else ("partial" if found else "not_found")),
    }


async def extract_row(record: dict[str, Any], spec: StudySpec, extractor: Optional[Extractor]) -> dict[str, Any]:
    """One structured row from one raw-responses row (never raises for a row)."""
    response = record.get("model_response")
    if record.get("status") != "ok" or not isinstance(response, str) or not response.strip():
        empty = {name: None for name in EXTRACTION_FIELDS[spec.number].model_fields}
        return {**record, **empty, "extraction_confidence": CONFIDENCE_NONE, "extraction_errors": "no model response to extract from",
                "extraction_method": "none", "extractor_model": None, "extraction_status": "skipped"}
    parsed = PARSERS[spec.number](response)
    settled = all(all(n in parsed.values for n in names) for names in FIELD_GROUPS[spec.number].values())
    llm, llm_error, used = None, None, None
    if not settled:
        if extractor is None:
            llm_error = "no LLM extractor configured"
        else:
            llm, llm_error = await llm_extract(extractor, spec, response)
            used = extractor.model
    return {**record, **combine(spec.number, parsed, llm, llm_error, llm_failed=used is not None and llm is None), "extractor_model": used}


async def run_extract_step(
    raw: pd.DataFrame, spec: StudySpec, extractor: Optional[Extractor], checkpoint: AnyCheckpoint,
    progress: RowProgress = NoProgress(),
) -> StepOutcome:
    """Extract every raw row not already extracted (failed and skipped rows are redone).

    A checkpointed extraction counts only if it was made from the same answer as the raw
    row's current ``model_response`` (the checkpoint keeps the answer it coded), so a code is
    never paired with another answer, e.g. after the raw table was rewritten. Only 'failed'
    rows (the LLM tier could not be used) count as failures of the step.
    """
    return await run_resumable(
        plain_records(raw), item_key=record_key,
        is_done=lambda raw_row, record: (record.get("extraction_status") in ("ok", "partial", "not_found")
                                         and record.get("model_response") == raw_row.get("model_response")),
        work=lambda record: extract_row(record, spec, extractor), window=extractor.client.concurrency if extractor else 1,
        checkpoint=checkpoint, progress=progress, status_column="extraction_status", error_column="extraction_errors",
        base=lambda raw_row: {k: v for k, v in raw_row.items() if k != "model_response"},  # the coded answer is always stored
    )
