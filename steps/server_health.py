"""Waiting for a model server that is still starting: the one health poll of the project.

Used by the runner (``--wait-for-endpoint``: an endpoint that may still be loading its model)
and by the cluster's serve step (its vLLM sidecar, which may also exit while loading). A
server is healthy when ``GET <url>/health`` answers 200 (vLLM, the embedded server and the
FAKE server all offer it); connection errors and other statuses mean "not yet".
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable, Optional

import httpx

from steps.errors import ServerError
from steps.redact import redact_url

POLL_S = 2.0
PROBE_TIMEOUT_S = 5.0
PROGRESS_EVERY_S = 30.0


async def is_healthy(http: httpx.AsyncClient, url: str, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """Whether ``url``/health answers 200 within ``timeout_s``."""
    try:
        return (await http.get(url.rstrip("/") + "/health", timeout=timeout_s)).status_code == 200
    except httpx.HTTPError:
        return False


async def wait_until_healthy(
    http: httpx.AsyncClient, url: str, timeout_s: float, *, server: Optional[str] = None, hint: str = "check the server's log",
    exited: Callable[[], Optional[str]] = lambda: None, poll_s: float = POLL_S,
    say: Callable[[str], None] = lambda text: print(text, flush=True),
    loading: str = "",
) -> float:
    """Poll ``url``/health until it answers 200; return the seconds waited.

    Raises :class:`ServerError` (exit 4) when ``exited()`` gives the server's exit code (it
    stopped while loading ``loading``, e.g. the model's id), or after ``timeout_s``; both messages name ``server`` (default:
    the model server at the redacted URL) and end with ``hint``. Says every 30 s that it is
    still waiting.
    """
    server = server or f"the model server at {redact_url(url)}"
    started = last_said = time.monotonic()
    while True:
        code = exited()
        if code is not None:
            raise ServerError(f"{server} exited with code {code} while loading{' ' + loading if loading else ''}; {hint}")
        if await is_healthy(http, url):
            return time.monotonic() - started
        waited = time.monotonic() - started
        if waited >= timeout_s:
            raise ServerError(f"{server} was not healthy after {timeout_s:.0f} s (GET /health); {hint}")
        if time.monotonic() - last_said >= PROGRESS_EVERY_S:
            say(f"waiting for {server} ({waited:.0f} s of at most {timeout_s:.0f} s; the model may still be loading)")
            last_said = time.monotonic()
        await asyncio.sleep(poll_s)
