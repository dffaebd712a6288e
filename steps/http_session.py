"""The connection pools under :class:`steps.llm_client.LLMClient`: one per model server (and one for the extractor).

A session sends one request and hands back the whole reply; :class:`~steps.llm_client.LLMClient`
owns everything else (concurrency, retries, timing, errors). Two implementations share one
contract:

* :class:`AiohttpSession` -- what runs use: aiohttp's connection pool, sized to the client's
  concurrency (so a request never waits for a connection, and the latency recorded per row
  is the request's own). Measured on a 2-core machine (``python -m benchmarks.runner_throughput``),
  it costs a tenth of the client CPU per request of httpx's own pool, which held the query
  stage at 0.07 of its bound.
* :class:`HttpxSession` -- any ``httpx.AsyncClient``: tests mock it with respx or
  ``httpx.MockTransport``, and the benchmark runs its baseline through httpx's pool.

Contract of ``post``/``get``: return a :class:`Reply` for any HTTP status; raise an
``httpx.TransportError`` subclass (the project's one vocabulary of transport failures, all
retried) when no complete reply arrived: ``ConnectError``/``ConnectTimeout`` (no connection),
``ReadTimeout`` (no byte within the read timeout), ``ReadError`` (reset, body cut short),
``RemoteProtocolError`` (closed without a reply, or not HTTP). Credentials in a URL are used
(basic auth) and never appear in an error.
"""

from __future__ import annotations

import asyncio
import urllib.request
from typing import Mapping, NamedTuple, Optional, Protocol
from urllib.parse import urlsplit

import aiohttp
import httpx

from steps.redact import redact

DEFAULT_REQUEST_TIMEOUT_S = 600.0
DEFAULT_CONNECT_TIMEOUT_S = 10.0


class Reply(NamedTuple):
    """One complete HTTP reply: status, headers (case-insensitive lookup) and body bytes."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class HttpSession(Protocol):
    """What :class:`~steps.llm_client.LLMClient` needs from a connection pool (see the module docstring)."""

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Reply:
        """POST ``body`` to ``url``; the complete reply, or an ``httpx.TransportError``."""
        ...

    async def get(self, url: str, headers: Mapping[str, str], timeout_s: Optional[float] = None) -> Reply:
        """GET ``url`` (``timeout_s`` bounds the whole request); the complete reply, or an ``httpx.TransportError``."""
        ...

    async def aclose(self) -> None:
        """Close every pooled connection."""
        ...


def _transport_error(exc: BaseException, url: str) -> httpx.TransportError:
    """The ``httpx.TransportError`` that says what went wrong with an aiohttp request (most specific class first)."""
    text = redact(str(exc), [urlsplit(url).password])
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(text or "no connection within the connect timeout")
    if isinstance(exc, (aiohttp.SocketTimeoutError, asyncio.TimeoutError)):
        return httpx.ReadTimeout(text or "no answer within the read timeout")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(text)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return httpx.RemoteProtocolError("the server closed the connection without a complete reply")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return httpx.ReadError(f"the reply's body was cut short: {text}")
    if isinstance(exc, (aiohttp.ClientOSError, ConnectionError)):
        return httpx.ReadError(text)
    if isinstance(exc, aiohttp.ClientResponseError):  # not a valid HTTP reply
        return httpx.RemoteProtocolError(f"not a valid HTTP reply: {exc.message}")
    if isinstance(exc, aiohttp.InvalidURL):
        return httpx.UnsupportedProtocol(f"not a usable URL: {exc.description or 'invalid'}")
    return httpx.TransportError(f"{type(exc).__name__}: {text}")


class AiohttpSession:
    """aiohttp's pool: at most ``max_connections`` connections (set it to the client's concurrency).

    Timeouts: ``connect_timeout_s`` to open a connection, ``request_timeout_s`` without a byte
    while reading (a long generation streams nothing until it ends, so this bounds the whole
    answer); no overall limit. The proxy variables (``HTTP_PROXY``, ``HTTPS_PROXY``, ``NO_PROXY``)
    are honoured as httpx honours them, read once per server (aiohttp's own ``trust_env`` would
    also look up ``.netrc`` in a thread for every request); certificates are checked against
    httpx's bundle (certifi), as before. The pool is made on first use, inside the running event loop.
    """

    def __init__(self, max_connections: int, request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
                 connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S):
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.max_connections = max_connections
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout_s, sock_read=request_timeout_s)
        self._session: Optional[aiohttp.ClientSession] = None
        self._proxies: dict[str, Optional[str]] = {}

    def _proxy(self, url: str) -> Optional[str]:
        """The proxy the environment names for ``url``'s server (None: direct), looked up once per server."""
        server = url.split("/", 3)[2] if url.count("/") >= 2 else url
        if server not in self._proxies:
            parts = urlsplit(url)
            proxy = urllib.request.getproxies().get(parts.scheme)
            self._proxies[server] = None if not proxy or urllib.request.proxy_bypass(parts.hostname or "") else proxy
        return self._proxies[server]

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=self.max_connections, limit_per_host=0, ssl=httpx.create_ssl_context())
        self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout, cookie_jar=aiohttp.DummyCookieJar(),
                                              trust_env=False, auto_decompress=True)
        return self._session

    async def _request(self, method: str, url: str, headers: Mapping[str, str], body: Optional[bytes],
                       timeout: Optional[aiohttp.ClientTimeout] = None) -> Reply:
        session = self._session or self._open()
        try:
            async with session.request(method, url, data=body, headers=headers, allow_redirects=False, proxy=self._proxy(url),
                                       timeout=timeout or self._timeout) as response:
                return Reply(response.status, response.headers, await response.read())
        except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError) as exc:
            raise _transport_error(exc, url) from exc

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Reply:
        """POST ``body`` to ``url`` (see the module docstring for the contract)."""
        return await self._request("POST", url, headers, body)

    async def get(self, url: str, headers: Mapping[str, str], timeout_s: Optional[float] = None) -> Reply:
        """GET ``url``, at most ``timeout_s`` in all when given."""
        timeout = aiohttp.ClientTimeout(total=timeout_s) if timeout_s is not None else None
        return await self._request("GET", url, headers, None, timeout)

    async def aclose(self) -> None:
        """Close the pool (a no-op when it was never used)."""
        if self._session is not None:
            await self._session.close()
            self._session = None


class HttpxSession:
    """Any ``httpx.AsyncClient`` as a session (respx and ``MockTransport`` in tests; httpx's pool in the benchmark).

    The client's own timeouts and limits apply; closing it stays with whoever made it.
    """

    def __init__(self, http: httpx.AsyncClient):
        self.http = http

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Reply:
        """POST ``body`` to ``url`` through the httpx client."""
        response = await self.http.post(url, content=body, headers=headers)
        return Reply(response.status_code, response.headers, await response.aread())

    async def get(self, url: str, headers: Mapping[str, str], timeout_s: Optional[float] = None) -> Reply:
        """GET ``url`` through the httpx client (``timeout_s``: this request's timeout, else the client's)."""
        if timeout_s is None:
            response = await self.http.get(url, headers=headers)
        else:
            response = await self.http.get(url, headers=headers, timeout=timeout_s)
        return Reply(response.status_code, response.headers, await response.aread())

    async def aclose(self) -> None:
        """Nothing: the httpx client belongs to the caller."""
