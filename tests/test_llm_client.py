"""The HTTP client: retry decisions (pure), retries over respx, the sliding window."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import httpx
import pytest
import respx

from steps.llm_client import LLMClient, RequestFailed, RetryPolicy, completed_in_window, parse_retry_after, retry_delay

POLICY = RetryPolicy(max_attempts=4, base_delay_s=1.0, max_delay_s=60.0)
URL = "http://model.test"


@pytest.mark.parametrize("status,error,retry", [
    pytest.param(408, None, True, id="408"),
    pytest.param(429, None, True, id="429"),
    pytest.param(500, None, True, id="500"),
    pytest.param(503, None, True, id="503"),
    pytest.param(400, None, False, id="400"),
    pytest.param(401, None, False, id="401"),
    pytest.param(404, None, False, id="404"),
    pytest.param(422, None, False, id="422"),
    pytest.param(None, httpx.ConnectError("refused"), True, id="connect-error"),
    pytest.param(None, httpx.ReadTimeout("slow"), True, id="read-timeout"),
    pytest.param(None, httpx.RemoteProtocolError("reset"), True, id="reset"),
    pytest.param(None, ValueError("bug"), False, id="programming-error"),
])
def test_what_is_retried(status, error, retry):
    assert (retry_delay(1, POLICY, status, error, rng=lambda: 0.5) is not None) == retry


def test_backoff_is_exponential_with_jitter_and_capped():
    low = [retry_delay(n, RetryPolicy(max_attempts=20), 500, rng=lambda: 0.0) for n in range(1, 10)]
    high = [retry_delay(n, RetryPolicy(max_attempts=20), 500, rng=lambda: 1.0) for n in range(1, 10)]
    assert high[:4] == [1.0, 2.0, 4.0, 8.0] and low[:4] == [0.5, 1.0, 2.0, 4.0]
    assert max(high) == 60.0


def test_attempts_are_finite():
    assert retry_delay(3, POLICY, 500) is not None
    assert retry_delay(4, POLICY, 500) is None


def test_retry_after_wins_and_is_capped():
    assert retry_delay(1, POLICY, 429, retry_after_s=7.0) == 7.0
    assert retry_delay(1, POLICY, 429, retry_after_s=3600.0) == 60.0


def test_parse_retry_after():
    now = datetime(2026, 11, 25, 12, 0, 0, tzinfo=timezone.utc)
    http_date = (now + timedelta(seconds=30)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert parse_retry_after("12", now) == 12.0
    assert parse_retry_after(http_date, now) == 30.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


async def _no_sleep(delay: float) -> None:
    _no_sleep.delays.append(delay)


@pytest.fixture
def sleeps():
    _no_sleep.delays = []
    return _no_sleep


def _client(http, sleeps, concurrency=2, api_key=None):
    return LLMClient(http, [URL], concurrency, POLICY, api_key=api_key, sleep=sleeps)


def test_retries_then_succeeds_honouring_retry_after(sleeps):
    async def go():
        with respx.mock:
            route = respx.post(f"{URL}/v1/chat").mock(side_effect=[
                httpx.Response(429, headers={"Retry-After": "5"}, json={"error": {"message": "slow down"}}),
                httpx.Response(503, text="overloaded"),
                httpx.Response(200, json={"ok": True}),
            ])
            async with httpx.AsyncClient() as http:
                response = await _client(http, sleeps).post_json("/v1/chat", {"x": 1})
            return route, response
    route, response = asyncio.run(go())
    assert response.body == {"ok": True} and response.attempts == 3 and route.call_count == 3
    assert sleeps.delays[0] == 5.0 and 1.0 <= sleeps.delays[1] <= 2.0


def test_permanent_error_is_not_retried_and_says_why(sleeps):
    async def go():
        with respx.mock:
            route = respx.post(f"{URL}/v1/chat").mock(return_value=httpx.Response(400, json={"error": {"message": "context too long"}}))
            async with httpx.AsyncClient() as http:
                with pytest.raises(RequestFailed) as info:
                    await _client(http, sleeps).post_json("/v1/chat", {})
            return route, info.value
    route, error = asyncio.run(go())
    assert route.call_count == 1 and error.attempts == 1 and error.status_code == 400
    assert error.reason == "HTTP 400: context too long"


def test_gives_up_after_max_attempts(sleeps):
    async def go():
        with respx.mock:
            route = respx.post(f"{URL}/v1/chat").mock(side_effect=httpx.ConnectError("connection refused"))
            async with httpx.AsyncClient() as http:
                with pytest.raises(RequestFailed) as info:
                    await _client(http, sleeps).post_json("/v1/chat", {})
            return route, info.value
    route, error = asyncio.run(go())
    assert route.call_count == 4 and error.attempts == 4
    assert "ConnectError: connection refused (after 4 attempts)" == error.reason


def test_malformed_json_body_is_retried(sleeps):
    async def go():
        with respx.mock:
            respx.post(f"{URL}/v1/chat").mock(
                side_effect=[httpx.Response(200, text='{"choices": [tru'), httpx.Response(200, json={"a": 1})])
            async with httpx.AsyncClient() as http:
                return await _client(http, sleeps).post_json("/v1/chat", {})
    assert asyncio.run(go()).attempts == 2


def test_api_key_is_sent_but_never_in_errors(sleeps):
    secret = "sk-very-secret-123"
    async def go():
        with respx.mock:
            route = respx.post(f"{URL}/v1/chat").mock(return_value=httpx.Response(401, json={"error": {"message": "bad key"}}))
            async with httpx.AsyncClient() as http:
                with pytest.raises(RequestFailed) as info:
                    await _client(http, sleeps, api_key=secret).post_json("/v1/chat", {})
            return route, info.value
    route, error = asyncio.run(go())
    assert route.calls[0].request.headers["authorization"] == f"Bearer {secret}"
    assert secret not in error.reason and secret not in repr(error)


def test_window_refills_as_each_request_finishes():
    """A slow request does not hold the others back (batch-and-wait would stall on it)."""
    order: list[int] = []

    async def go():
        gate = asyncio.Event()

        async def worker(i: int) -> int:
            if i == 0:
                await gate.wait()  # the slowest request: finishes only after all the others
            else:
                await asyncio.sleep(0)
            order.append(i)
            if i == 9:
                gate.set()
            return i

        return [r async for r in completed_in_window(range(10), worker, window=3)]

    results = asyncio.run(go())
    assert sorted(results) == list(range(10))
    assert order[-1] == 0  # items 1..9 all ran through the two free slots while 0 was pending


def test_concurrency_limit_holds_across_callers(fake_server):
    """One client shared by two nodes never exceeds its limit, and spreads over replicas."""
    fake_server.latency_ms = 20

    async def go():
        async with httpx.AsyncClient() as http:
            client = LLMClient(http, [fake_server.url, fake_server.url + "/"], concurrency=3)
            payload = {"messages": [{"role": "user", "content": "hi"}]}
            await asyncio.gather(*(client.post_json("/v1/chat/completions", payload) for _ in range(12)))
    asyncio.run(go())
    assert fake_server.chat_requests == 12
    assert fake_server.max_in_flight == 3


def test_credentials_in_urls_are_redacted():
    from steps.llm_client import redact_url
    assert redact_url("http://user:s3cret@vllm.local:8000/v1") == "http://vllm.local:8000/v1"
    assert redact_url("http://vllm.local:8000") == "http://vllm.local:8000"


def test_each_model_has_a_pool_as_large_as_its_concurrency_and_latency_is_the_requests_own(tmp_path, fake_server):
    """100 requests in flight (more than the 64 connections every model once shared): none waits for a connection, so
    each row's processing_time_ms is its request's 2 s, not 2 s more for a connection (a shared 64 pool gave >= 4 s)."""
    import pandas as pd

    from pipeline.cli import main

    fake_server.latency_ms = 2000
    code = main(["run", "--endpoint", f"fake-model={fake_server.url}", "--studies", "2", "--replications", "13", "--concurrency", "100",
                 "--stages", "query", "--output", str(tmp_path)])
    assert code == 0
    assert fake_server.max_in_flight == 100
    (raw,) = tmp_path.glob("*/exp1/fake-model_study2_raw_responses.parquet")
    latency = pd.read_parquet(raw).processing_time_ms
    # measured on a loaded 2-core machine (load 10): at most 1.35 s of a 1 s request; a wait for a connection adds a whole request
    assert len(latency) == 104 and latency.min() >= 2000 and latency.max() < 3800


def test_the_aiohttp_session_speaks_the_contract(fake_server):
    """The pool runs use: replies for any status, transport failures as httpx.TransportError (retried), in the
    same LLMClient the respx tests drive."""
    from steps.http_session import AiohttpSession

    async def go():
        session = AiohttpSession(4, request_timeout_s=0.5, connect_timeout_s=1)
        try:
            client = LLMClient(session, [fake_server.url], 4, RetryPolicy(max_attempts=2, base_delay_s=0.0, max_delay_s=0.0))
            ok = await client.post_json("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]})
            fake_server.fault_script = ["truncated", "ok", "reset", "reset", "timeout", "timeout", "429", "ok"]
            after_truncated = await client.post_json("/v1/chat/completions", {"messages": [{"role": "user", "content": "a"}]})
            with pytest.raises(RequestFailed) as reset:
                await client.post_json("/v1/chat/completions", {"messages": [{"role": "user", "content": "b"}]})
            with pytest.raises(RequestFailed) as slow:
                await client.post_json("/v1/chat/completions", {"messages": [{"role": "user", "content": "c"}]})
            after_429 = await client.post_json("/v1/chat/completions", {"messages": [{"role": "user", "content": "d"}]})
            with pytest.raises(RequestFailed) as rejected:
                await client.post_json("/v1/chat/completions", {"messages": [{"role": "user", "content": "REJECT"}]})
            listing = await client.get_json("/v1/models")
            refused = LLMClient(session, ["http://127.0.0.1:9"], 1, RetryPolicy(max_attempts=1))
            with pytest.raises(RequestFailed) as unreachable:
                await refused.post_json("/v1/chat/completions", {})
            return ok, after_truncated, reset.value, slow.value, after_429, rejected.value, listing, unreachable.value
        finally:
            await session.aclose()

    fake_server.hang_s = 2
    ok, after_truncated, reset, slow, after_429, rejected, listing, unreachable = asyncio.run(go())
    assert ok.attempts == 1 and ok.body["choices"][0]["message"]["content"]
    assert after_truncated.attempts == 2 and after_429.attempts == 2
    assert reset.attempts == 2 and reset.reason.startswith(("ReadError", "RemoteProtocolError"))
    assert slow.attempts == 2 and slow.reason.startswith("ReadTimeout")
    assert rejected.attempts == 1 and rejected.status_code == 400 and rejected.reason == "HTTP 400: fake 400"
    assert listing["data"][0]["id"] == "fake-model"
    assert unreachable.reason.startswith("ConnectError") and unreachable.status_code is None


class _CountingSession:
    """An AiohttpSession that counts the POSTs each server received an attempt of."""

    def __init__(self, inner):
        self.inner, self.attempts = inner, {}

    async def post(self, url, body, headers):
        server = url.rsplit("/v1/", 1)[0]
        self.attempts[server] = self.attempts.get(server, 0) + 1
        return await self.inner.post(url, body, headers)

    async def get(self, url, headers, timeout_s=None):
        return await self.inner.get(url, headers, timeout_s)

    async def aclose(self):
        await self.inner.aclose()


def test_a_replica_that_refuses_connections_is_passed_over_while_another_is_up(fake_server):
    """A dead replica fails at once, so 'fewest in flight' would send it every retry: after refusing it is passed over."""
    from pipeline.model_server.embedded import free_port
    from steps.http_session import AiohttpSession

    dead = f"http://127.0.0.1:{free_port()}"
    policy = RetryPolicy(max_attempts=2, base_delay_s=0.0, max_delay_s=0.0)

    async def go(urls):
        session = _CountingSession(AiohttpSession(4, connect_timeout_s=2))
        try:
            client = LLMClient(session, urls, 4, policy)
            results = await asyncio.gather(*(client.post_json("/v1/chat/completions", {"messages": [{"role": "user", "content": str(i)}]})
                                             for i in range(40)), return_exceptions=True)
            return results, session.attempts
        finally:
            await session.aclose()

    results, attempts = asyncio.run(go([dead, fake_server.url]))
    assert all(not isinstance(r, BaseException) for r in results)  # every request ends on the live replica
    assert attempts[fake_server.url] == 40 and attempts[dead] <= 4  # the dead one is tried by the first wave only

    results, attempts = asyncio.run(go([dead, f"http://127.0.0.1:{free_port()}"]))  # all down: tried, then failed, never stuck
    assert all(isinstance(r, RequestFailed) and r.reason.startswith("ConnectError") for r in results)
    assert sum(attempts.values()) == 80
