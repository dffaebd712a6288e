"""The project's one redaction helper: secrets never reach a message, log line, manifest or artifact.

Used by the model-server client (URLs with credentials), the artifact store (S3 keys in
pyarrow's error texts) and the Argo client (the bearer token).
"""

from __future__ import annotations

from typing import Iterable, Optional

import httpx

MASK = "***"


def secret_forms(token: Optional[str]) -> list[str]:
    """The forms a secret may appear in (with and without a ``Bearer`` prefix), longest first."""
    if not token:
        return []
    forms = {token.strip()}
    parts = token.split(None, 1)
    if len(parts) == 2 and parts[0].lower() == "bearer":
        forms.add(parts[1].strip())
    return sorted((f for f in forms if f), key=len, reverse=True)


def redact(text: str, secrets: Iterable[Optional[str]]) -> str:
    """``text`` with every non-empty secret (in each of its :func:`secret_forms`) replaced by ``***``."""
    for secret in secrets:
        for form in secret_forms(secret):
            text = text.replace(form, MASK)
    return text


def redact_url(url: str) -> str:
    """``url`` without any user:password part (for errors, logs and manifests)."""
    parsed = httpx.URL(url)
    return str(parsed.copy_with(username=None, password=None)) if parsed.userinfo else url
