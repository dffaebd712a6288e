"""The module that sends requests to model servers (vLLM, llama.cpp, hosted APIs) and the LLM extractor.

Other HTTP in the project is not requests to a model: the health polls of a starting
server (:mod:`steps.server_health`) and the Argo API client (``pipeline.cluster.argo_api``,
via Hera's requests-based service).

Contracts:

* One concurrency limit per client: at most ``concurrency`` requests are on the wire
  at once; a slot is released when a request finishes (or goes to sleep before a
  retry), so the window refills immediately -- never send-N-and-wait.
* One connection pool per client (:mod:`steps.http_session`), sized by whoever makes it
  (the runner: the client's concurrency), so a request never waits for a connection and
  ``Response.latency_ms`` is the request's own time.
* One finite retry policy (:mod:`steps.retry`, shared with the artifact store), decided
  by the pure :func:`retry_delay`: 408, 429, 5xx, connection errors, timeouts and
  unreadable JSON bodies are retried with exponential backoff and jitter, honouring
  ``Retry-After``; everything else fails at once.
* Failures come back as :class:`RequestFailed` carrying a one-line reason and the
  number of attempts; callers record them per row and go on.
* The pool is passed in: an ``httpx.AsyncClient`` (tests use respx or MockTransport) or an
  :class:`~steps.http_session.AiohttpSession` (runs).
* API keys go only into the ``Authorization`` header; they never appear in errors.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, AsyncGenerator, Awaitable, Callable, Iterable, Optional, TypeVar

import httpx
import orjson

from steps.http_session import DEFAULT_REQUEST_TIMEOUT_S, AiohttpSession, HttpSession, HttpxSession, Reply  # noqa: F401
from steps.redact import redact_url  # noqa: F401  (re-exported: callers use it with the client)
from steps.retry import DEFAULT_MAX_ATTEMPTS, RetryPolicy, backoff_delay  # noqa: F401  (RetryPolicy is part of this API)

RETRYABLE_STATUS = frozenset({408, 429}) | frozenset(range(500, 600))
REPLICA_DOWN_S = 15.0  # a replica that refused a connection is passed over this long while another one is up


class RequestFailed(Exception):
    """A request failed for good (not retryable, or out of attempts)."""

    def __init__(self, reason: str, attempts: int, status_code: Optional[int] = None):
        super().__init__(reason)
        self.reason = reason
        self.attempts = attempts
        self.status_code = status_code


class _MalformedBody(Exception):
    """A 2xx response whose body is not JSON (truncated, garbage): retried."""


def parse_retry_after(value: Optional[str], now: Optional[datetime] = None) -> Optional[float]:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date); None if absent/invalid."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    now = now or datetime.now(timezone.utc)
    return max(0.0, (when - now).total_seconds())


def is_retryable(status_code: Optional[int], error: Optional[BaseException]) -> bool:
    """True for 408/429/5xx, transport errors (connect, reset, timeout) and unreadable bodies."""
    if error is not None:
        return isinstance(error, (httpx.TransportError, _MalformedBody))
    return status_code in RETRYABLE_STATUS


def retry_delay(
    attempt: int,
    policy: RetryPolicy,
    status_code: Optional[int] = None,
    error: Optional[BaseException] = None,
    retry_after_s: Optional[float] = None,
    rng: Callable[[], float] = random.random,
) -> Optional[float]:
    """Seconds to sleep before attempt ``attempt + 1``, or None to give up.

    ``attempt`` counts attempts made so far (1 after the first). A server's
    Retry-After wins over the computed backoff, capped at ``policy.max_delay_s``.
    """
    if not is_retryable(status_code, error):
        return None
    return backoff_delay(attempt, policy, retry_after_s, rng)


@dataclass(frozen=True)
class Response:
    """A successful JSON response and how long the successful attempt took."""

    body: dict[str, Any]
    latency_ms: float
    attempts: int
    received_at: datetime


def _describe(error: BaseException) -> str:
    name = type(error).__name__
    text = str(error).strip()
    return f"{name}: {text}" if text else name


def _json_body(body: bytes, status: int) -> Any:
    """The parsed JSON of a 2xx body; _MalformedBody (retried) when it is not JSON.

    orjson parses the large echo bodies of Experiment 2 (60 kB per request) in a sixth of the
    standard library's time; a body it refuses is read again by ``json``, which also accepts the
    ``NaN``/``Infinity`` literals some servers write (the scorer then refuses such values by name).
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(body)
    except ValueError as exc:
        raise _MalformedBody(f"HTTP {status} with a body that is not JSON ({len(body)} bytes)") from exc


def _error_detail(body: bytes) -> str:
    """The server's error message (OpenAI-style ``{"error": {"message": ...}}``, or the text), on one line, at most 300 chars."""
    try:
        parsed = json.loads(body)
        message = parsed.get("error", parsed) if isinstance(parsed, dict) else parsed
        if isinstance(message, dict):
            message = message.get("message", message)
        detail = str(message)
    except ValueError:
        detail = body.decode("utf-8", errors="replace")
    return " ".join(detail.split())[:300]


class LLMClient:
    """Sends JSON POSTs to one model server (or several replicas of it).

    ``http`` is the connection pool (:mod:`steps.http_session`): an :class:`AiohttpSession`
    sized to ``concurrency`` in runs, or any ``httpx.AsyncClient`` (respx in tests). ``base_urls``
    are replicas of the same model; each request goes to the replica with the fewest requests
    in flight, passing over for ``REPLICA_DOWN_S`` one that could not be connected to (a dead
    replica answers at once, so it would otherwise draw every retry); when every replica is
    down they are all tried again. A request's latency is timed from when it holds a slot to its last byte, so it
    excludes the wait for a slot (and, with a pool of ``concurrency`` connections, for a
    connection).
    """

    def __init__(
        self,
        http: httpx.AsyncClient | HttpSession,
        base_urls: Iterable[str],
        concurrency: int,
        policy: RetryPolicy = RetryPolicy(),
        api_key: Optional[str] = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ):
        self._session: HttpSession = HttpxSession(http) if isinstance(http, httpx.AsyncClient) else http
        self._urls = [u.rstrip("/") for u in base_urls]
        if not self._urls:
            raise ValueError("LLMClient needs at least one base URL")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.concurrency = concurrency
        self._slots = asyncio.Semaphore(concurrency)
        self._in_flight = {u: 0 for u in self._urls}
        self._down_until = {u: 0.0 for u in self._urls}
        self._policy = policy
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._sleep = sleep

    @property
    def base_urls(self) -> list[str]:
        """The replicas' base URLs, without credentials."""
        return [redact_url(u) for u in self._urls]

    def _pick(self) -> str:
        """The replica for the next request: the fewest in flight among those not marked down (all, if all are)."""
        if len(self._urls) == 1:
            return self._urls[0]
        now = time.monotonic()
        up = [u for u in self._urls if self._down_until[u] <= now] or self._urls
        return min(up, key=self._in_flight.__getitem__)

    async def _attempt(self, path: str, body: bytes) -> tuple[Reply, float]:
        async with self._slots:
            url = self._pick()
            self._in_flight[url] += 1
            started = time.perf_counter()
            try:
                reply = await self._session.post(url + path, body, self._headers)
            except (httpx.ConnectError, httpx.ConnectTimeout):
                self._down_until[url] = time.monotonic() + REPLICA_DOWN_S
                raise
            finally:
                self._in_flight[url] -= 1
            return reply, (time.perf_counter() - started) * 1000.0

    async def post_json(self, path: str, payload: dict[str, Any],
                        decode: Optional[Callable[[bytes], Optional[dict[str, Any]]]] = None) -> Response:
        """POST ``payload`` to ``path`` with retries; return the parsed body or raise RequestFailed.

        ``decode`` reads a 2xx body the caller needs only part of (e.g. :func:`steps.echo_reply.decode_echo`);
        when it returns None the whole body is parsed as JSON as usual.
        """
        body = orjson.dumps(payload)
        attempt = 0
        while True:
            attempt += 1
            status: Optional[int] = None
            error: Optional[BaseException] = None
            retry_after: Optional[float] = None
            try:
                reply, latency_ms = await self._attempt(path, body)
                status = reply.status
                if 200 <= status < 300:
                    parsed = decode(reply.body) if decode is not None else None
                    if parsed is None:
                        parsed = _json_body(reply.body, status)
                    if not isinstance(parsed, dict):
                        raise RequestFailed(f"HTTP {status} with JSON that is not an object", attempt, status)
                    return Response(parsed, latency_ms, attempt, datetime.now(timezone.utc))
                retry_after = parse_retry_after(reply.headers.get("retry-after"))
                reason = f"HTTP {status}: {_error_detail(reply.body)}"
            except (httpx.TransportError, _MalformedBody) as exc:
                error, reason = exc, _describe(exc)
            delay = retry_delay(attempt, self._policy, status, error, retry_after)
            if delay is None:
                suffix = f" (after {attempt} attempts)" if attempt > 1 else ""
                raise RequestFailed(reason + suffix, attempt, status)
            await self._sleep(delay)

    async def get_json(self, path: str, replica: int = 0) -> dict[str, Any]:
        """One GET (no retries) to replica ``replica`` for health and metadata checks; raises RequestFailed."""
        url = self._urls[replica] + path
        shown = redact_url(url)
        headers = {k: v for k, v in self._headers.items() if k != "Content-Type"}
        try:
            reply = await self._session.get(url, headers)
        except httpx.TransportError as exc:
            raise RequestFailed(f"{shown}: {_describe(exc)}", 1) from exc
        if not 200 <= reply.status < 300:
            raise RequestFailed(f"{shown}: HTTP {reply.status}: {_error_detail(reply.body)}", 1, reply.status)
        try:
            return json.loads(reply.body)
        except ValueError as exc:
            raise RequestFailed(f"{shown}: response is not JSON", 1, reply.status) from exc

    async def aclose(self) -> None:
        """Close the client's connection pool (an httpx client passed in stays open: it belongs to the caller)."""
        await self._session.aclose()


T = TypeVar("T")
R = TypeVar("R")


async def completed_in_window(
    items: Iterable[T], worker: Callable[[T], Awaitable[R]], window: int
) -> AsyncGenerator[R, None]:
    """Run ``worker`` over ``items`` keeping up to ``window`` running; yield results as each finishes.

    A new item starts as soon as one finishes (sliding window). Exceptions raised by
    ``worker`` propagate after the other running tasks are cancelled.
    """
    iterator = iter(items)
    running: set[asyncio.Task[R]] = set()

    def refill() -> None:
        while len(running) < window:
            try:
                item = next(iterator)
            except StopIteration:
                return
            running.add(asyncio.ensure_future(worker(item)))

    refill()
    try:
        while running:
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                running.discard(task)
            refill()
            for task in done:
                yield task.result()
    finally:
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
