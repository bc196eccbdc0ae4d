from __future__ import annotations

import pytest

from embedserve.accounting.ratelimit import RateLimiter, storage_uri
from embedserve.accounting.store_gateway import StoreGateway
from embedserve.accounting.values import Limits
from embedserve.api.headers import rate_limit_headers, reset_text
from embedserve.errors import InsufficientQuotaError, RateLimitExceededError
from tests.unit.accounting.conftest import FakeClock


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.02, "20ms"), (0.0, "0ms"), (1.0, "1s"), (59.2, "1m0s"), (360.0, "6m0s"), (61, "1m1s")],
)
def test_reset_uses_openai_duration_format(seconds: float, text: str) -> None:
    assert reset_text(seconds) == text


@pytest.mark.parametrize(
    ("url", "uri"),
    [
        (None, "async+memory://"),
        ("redis://h:6379/7", "async+redis://h:6379/7"),
        ("rediss://h/0", "async+rediss://h/0"),
    ],
)
def test_storage_is_memory_or_async_redis(url: str | None, uri: str) -> None:
    assert storage_uri(url) == uri


async def test_requests_per_minute_then_429_with_headers(clock: FakeClock) -> None:
    limiter = RateLimiter(clock=clock)
    limits = Limits(rpm=2)
    first = rate_limit_headers(await limiter.acquire("k", limits, tokens=10))
    assert first["x-ratelimit-limit-requests"] == "2"
    assert first["x-ratelimit-remaining-requests"] == "1"
    await limiter.acquire("k", limits, tokens=10)
    with pytest.raises(RateLimitExceededError) as info:
        await limiter.acquire("k", limits, tokens=10)
    headers = rate_limit_headers(info.value.rate_limit)
    assert (info.value.status, info.value.code) == (429, "rate_limit_exceeded")
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert int(headers["retry-after"]) >= 1
    assert int(headers["retry-after-ms"]) > 0
    assert "x-ratelimit-reset-requests" in headers
    clock.advance(121)
    await limiter.acquire("k", limits, tokens=10)


async def test_tokens_per_minute_counts_tokens(clock: FakeClock) -> None:
    limiter = RateLimiter(clock=clock)
    limits = Limits(tpm=100)
    headers = rate_limit_headers(await limiter.acquire("k", limits, tokens=60))
    assert headers["x-ratelimit-remaining-tokens"] == "40"
    with pytest.raises(RateLimitExceededError, match="100 tokens per minute"):
        await limiter.acquire("k", limits, tokens=60)
    await limiter.acquire("k", limits, tokens=40)


async def test_a_request_larger_than_the_tpm_is_refused_outright(clock: FakeClock) -> None:
    with pytest.raises(RateLimitExceededError, match="has 500 tokens"):
        await RateLimiter(clock=clock).acquire("k", Limits(tpm=100), tokens=500)


async def test_keys_are_limited_separately_and_unlimited_has_no_headers(clock: FakeClock) -> None:
    limiter = RateLimiter(clock=clock)
    await limiter.acquire("a", Limits(rpm=1), tokens=1)
    await limiter.acquire("b", Limits(rpm=1), tokens=1)
    assert rate_limit_headers(await limiter.acquire("c", Limits(), tokens=10**9)) == {}


async def test_gateway_applies_key_limits_and_reports_them(gateway: StoreGateway) -> None:
    key = await gateway.keys.create(name="a", rpm=1, tpm=1000)
    principal = await gateway.authenticate(key.secret)
    admission = await gateway.admit(principal, request_id="r", model="m", inputs=1, tokens=7)
    assert rate_limit_headers(admission.rate_limit)["x-ratelimit-remaining-tokens"] == "993"
    await gateway.settle(admission, ok=True)
    with pytest.raises(RateLimitExceededError):
        await gateway.admit(principal, request_id="r2", model="m", inputs=1, tokens=7)


async def test_a_402_carries_the_rate_limit_headers(gateway: StoreGateway) -> None:
    key = await gateway.keys.create(name="a", credits=0, rpm=10)
    principal = await gateway.authenticate(key.secret)
    with pytest.raises(InsufficientQuotaError) as info:
        await gateway.admit(principal, request_id="r", model="m", inputs=1, tokens=7)
    assert rate_limit_headers(info.value.rate_limit)["x-ratelimit-limit-requests"] == "10"
