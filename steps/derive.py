"""Derived input columns (pure): named rules a study definition refers to.

Each rule takes the source cell text and the rule's parameters from the study YAML,
and returns the derived value or raises :class:`DerivationError` with a message that
says what was expected.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Sequence


class DerivationError(ValueError):
    """The source cell does not fit the rule; the message says what was expected."""


def goal_category(text: str, cues: dict[str, list[str]], negations: Sequence[str] = ()) -> str:
    """'social', 'informational' or 'both' from a goal sentence, by cue phrases.

    Everything from the first negation phrase on is ignored, so "make Ann feel good,
    but not necessarily give informative feedback" is 'social'. A sentence with cues
    of both kinds ("BOTH make Ann feel good AND give accurate feedback") is 'both';
    one with neither is an unknown template.
    """
    affirmed = text
    for negation in negations:
        affirmed = re.split(negation, affirmed, maxsplit=1, flags=re.IGNORECASE)[0]
    found = {kind for kind, patterns in cues.items() if any(re.search(p, affirmed, re.IGNORECASE) for p in patterns)}
    if found == {"social", "informational"}:
        return "both"
    if len(found) == 1:
        return found.pop()
    expected = "; ".join(f"{kind}: {', '.join(repr(p) for p in pats)}" for kind, pats in cues.items())
    raise DerivationError(
        f"unknown Goal template {text!r}: expected a sentence with a social and/or informational cue ({expected})"
    )


_HEARTS = re.compile(r"^\s*(\d+)\s*(hearts?)?\s*\.?\s*$", re.IGNORECASE)


def hearts_count(text: str) -> int:
    """Number of hearts in '0 hearts' .. '3 hearts' (or a bare number); must be 0-3."""
    match = _HEARTS.match(text)
    if not match:
        raise DerivationError(f"State {text!r} is not of the form 'N hearts' with N in 0-3")
    number = int(match.group(1))
    if not 0 <= number <= 3:
        raise DerivationError(f"State {text!r} is out of range: expected 0 to 3 hearts")
    return number


RULES: dict[str, Callable[..., Any]] = {"goal_category": goal_category, "hearts_count": hearts_count}


def derive(rule: dict[str, Any], row: dict[str, str]) -> Any:
    """Apply one ``derived`` entry of a study definition to a row of raw cells."""
    params = {k: v for k, v in rule.items() if k not in ("rule", "source")}
    return RULES[rule["rule"]](row[rule["source"]], **params)
