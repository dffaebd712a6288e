"""Tier 1 of extraction: a deterministic parser for answers that follow the requested format.

It claims a field only when the text settles it unambiguously (a labelled answer, one
value): "no" inside "know" or "all" inside "small" never count, "was not" is "wasn't",
numbers may be words, bets may be written in dollars or percent. It also reports weak
*hints* (an unlabelled single mention) that the LLM tier's answers are checked against.

Both parsers return :class:`Parsed`: ``values`` (settled fields), ``hints`` (weak
candidates) and ``notes`` (per-field remarks such as a bet sum that is not 100).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Optional

from steps.reasoning import split_think_tags

NUMBER_WORDS = {"zero": 0, "none": 0, "one": 1, "two": 2, "three": 3, "all": 3}
_NUM = r"(\d+|zero|none|one|two|three)"
_MARKDOWN = re.compile(r"[*_`#>]+")
ASSESSMENTS = ("terrible", "bad", "good", "amazing")


@dataclass
class Parsed:
    """What the deterministic parser could settle, and what it merely saw."""

    values: dict[str, Any] = field(default_factory=dict)
    hints: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)


def clean_text(text: Optional[str]) -> str:
    """Any <think> trace dropped, markdown emphasis removed, curly quotes straightened,
    whitespace collapsed per line."""
    text = split_think_tags(text or "", reasoning=False).answer or ""
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"').replace("\u201d", '"')
    text = _MARKDOWN.sub("", text)
    return "\n".join(" ".join(line.split()) for line in text.splitlines()).strip()


def _number(token: str) -> Optional[int]:
    token = token.lower()
    return int(token) if token.isdigit() else NUMBER_WORDS.get(token)


def _labelled(pattern: str, text: str) -> list[str]:
    return [m.group(1) for m in re.finditer(pattern, text, re.IGNORECASE)]


def _bets(text: str) -> Optional[dict[int, float]]:
    """State -> bet from 'Probabilities: 0: 10%, 1: 20%...' or '$10 on 2 exams' forms."""
    section = re.search(r"probabilit(?:y|ies)\s*(?:estimates?)?\s*[:\-]?(.*?)(?:\n\s*knowledge\b|$)", text, re.IGNORECASE | re.DOTALL)
    pairs: list[tuple[int, float]] = []
    if section:
        for m in re.finditer(r"(?<![\d.$])([0-3])\s*(?:[a-z]+\s*)?[:=]\s*\$?\s*(\d{1,3}(?:\.\d+)?)\s*%?", section.group(1), re.IGNORECASE):
            pairs.append((int(m.group(1)), float(m.group(2))))
    if not pairs:
        for m in re.finditer(r"\$\s*(\d{1,3}(?:\.\d+)?)\s+on\s+([0-3])\b", text, re.IGNORECASE):
            pairs.append((int(m.group(2)), float(m.group(1))))
    states = [s for s, _ in pairs]
    if sorted(states) != [0, 1, 2, 3]:
        return None
    return dict(pairs)


def parse_study1(response: Optional[str]) -> Parsed:
    """Prior_A, probability_0..3 and Knowledge_A from a Study 1 answer."""
    text = clean_text(response)
    out = Parsed()
    label = r"initial\s+answer\s*[:=\-]?\s*"
    hedged = re.search(label + _NUM + r"\s*(?:or|to|-|/|\u2013)\s*" + _NUM + r"\b", text, re.IGNORECASE)
    priors = {n for n in (_number(v) for v in _labelled(label + _NUM + r"\b", text)) if n is not None}
    if hedged:
        out.notes["Prior_A"] = f"hedged answer {hedged.group(0).split(':')[-1].strip()!r}"
    elif len(priors) == 1 and 0 <= next(iter(priors)) <= 3:
        out.values["Prior_A"] = priors.pop()
    elif len(priors) > 1:
        out.notes["Prior_A"] = f"several initial answers given: {sorted(priors)}"
    else:
        lone = {_number(m) for m in re.findall(r"(?<![\d%$.])\b([0-3])\b(?![\d%.])", text.split("\n")[0])}
        if len(lone) == 1:
            out.hints["Prior_A"] = lone.pop()

    bets = _bets(text)
    if bets is not None:
        for state, value in bets.items():
            if value != int(value):
                out.notes[f"probability_{state}"] = f"{value:g} rounded to {round(value)}"
            out.values[f"probability_{state}"] = int(round(value))
        total = sum(out.values[f"probability_{s}"] for s in range(4))
        if total != 100:
            out.notes["probabilities"] = f"bets sum to {total}, not 100 (kept as given)"

    knowledge = {v.lower() for v in _labelled(r"knowledge(?:\s+answer)?\s*[:=\-]?\s*(yes|no)\b", text)}
    if len(knowledge) == 1:
        out.values["Knowledge_A"] = knowledge.pop()
    elif len(knowledge) > 1:
        out.notes["Knowledge_A"] = "both yes and no given"
    else:
        words = {w.lower() for w in re.findall(r"\b(yes|no)\b", text, re.IGNORECASE)}
        if len(words) == 1:
            out.hints["Knowledge_A"] = words.pop()
    return out


_UTTERANCE = re.compile(r"\bit\s+(wasn't|wasnt|was\s+not|was)\s+(terrible|bad|good|amazing)\b", re.IGNORECASE)


def canonical_utterance(frame: str, assessment: str) -> str:
    """'It was good' / "It wasn't good"."""
    return f"It {frame} {assessment}"


def parse_study2(response: Optional[str]) -> Parsed:
    """Was_Wasnt, Assessment and response_cleaned from a Study 2 answer.

    Settled only when exactly one of the 8 utterances occurs (a model that repeats the
    whole option list is left to the LLM tier).
    """
    text = clean_text(response)
    out = Parsed()
    found = set()
    for m in _UTTERANCE.finditer(text):
        frame = "was" if m.group(1).lower() == "was" else "wasn't"
        found.add((frame, m.group(2).lower()))
    if len(found) == 1:
        frame, assessment = found.pop()
        out.values.update(Was_Wasnt=frame, Assessment=assessment, response_cleaned=canonical_utterance(frame, assessment))
    elif len(found) > 1:
        out.notes["Was_Wasnt"] = f"{len(found)} different utterances mentioned"
    else:
        words = {w.lower() for w in re.findall(r"\b(terrible|bad|good|amazing)\b", text, re.IGNORECASE)}
        if len(words) == 1:
            out.hints["Assessment"] = words.pop()
        negated = re.search(r"\b(wasn't|wasnt|was\s+not|isn't|is\s+not|not)\b", text, re.IGNORECASE)
        if re.search(r"\bwas\b|\bis\b", text, re.IGNORECASE):
            out.hints["Was_Wasnt"] = "wasn't" if negated else "was"
    return out


PARSERS = {1: parse_study1, 2: parse_study2}
