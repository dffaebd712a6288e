"""Render a study's prompt template for one input row as chat messages (pure)."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Mapping

from steps.studies import PromptTemplate, StudySpec

_BREAK = re.compile(r"\s*<br\s*/?>\s*", re.IGNORECASE)


def html_breaks_to_newlines(text: str) -> str:
    """'A.<br>B.' -> 'A.\\nB.' (any <br>, <br/>, <BR /> with the spaces around it)."""
    return _BREAK.sub("\n", text).strip()


def render_messages(
    template: PromptTemplate, spec: StudySpec, row: Mapping[str, Any], system_role: bool = True
) -> list[dict[str, str]]:
    """Chat messages for ``row``.

    Columns in ``spec.line_break_columns`` have '<br>' turned into line breaks. For a
    model whose chat template has no system role (Gemma, DeepSeek-R1), the system text
    is prepended to the user message instead of being dropped.
    """
    values = {k: (html_breaks_to_newlines(v) if k in spec.line_break_columns and isinstance(v, str) else v) for k, v in row.items()}
    user = template.user.format_map(values)
    system = template.system.format_map(values) if template.system else ""
    if not system:
        return [{"role": "user", "content": user}]
    if system_role:
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]
    return [{"role": "user", "content": f"{system}\n\n{user}"}]


def messages_hash(messages: list[dict[str, str]]) -> str:
    """First 16 hex digits of sha256 over the messages' canonical JSON."""
    canonical = json.dumps(messages, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
