"""Per-key requests and tokens per minute, on the ``limits`` library (sliding-window counter).

Memory storage by default; ``async+redis://`` when a Redis URL is set, so replicas share one budget.
Returns the key's standing (a ``RateLimitState``: limit, remaining and reset per dimension) for every request and
raises it, with the delay to wait, on a refusal; ``api/headers.py`` renders it as OpenAI's headers.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

from limits import RateLimitItemPerMinute
from limits.aio.storage import Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.storage import storage_from_string

from embedserve.accounting.values import Limits
from embedserve.errors import (
    RateLimitExceededError,
    RateLimitState,
    RateLimitWindow,
    StoreUnavailableError,
)

REDIS_TIMEOUT_S = 2.0


def storage_uri(redis_url: str | None) -> str:
    if not redis_url:
        return "async+memory://"
    for scheme in ("redis://", "rediss://", "redis+unix://"):
        if redis_url.startswith(scheme):
            return "async+" + redis_url
    return redis_url


class RateLimiter:
    def __init__(self, *, redis_url: str | None = None, clock: Callable[[], float] = time.time) -> None:
        uri = storage_uri(redis_url)
        # redis-py (a declared dependency) rather than limits' default async client, coredis.
        # Bounded socket waits: a stopped or frozen Redis fails a request in seconds (503), never hangs it.
        options: dict[str, float | str | bool] = (
            {"implementation": "redispy", "socket_timeout": REDIS_TIMEOUT_S, "socket_connect_timeout": REDIS_TIMEOUT_S}
            if "redis" in uri.split("://")[0]
            else {}
        )
        storage = storage_from_string(uri, **options)
        if not isinstance(storage, Storage):
            raise ValueError(f"not an asyncio rate-limit storage: {uri}")
        self._storage: Storage = storage
        self._limiter = SlidingWindowCounterRateLimiter(self._storage)
        self._clock = clock

    async def acquire(self, key_id: str, limits: Limits, *, tokens: int) -> RateLimitState:
        """Count one request of ``tokens`` tokens or raise ``RateLimitExceededError``; returns the key's standing."""
        checks = [
            (name, RateLimitItemPerMinute(limit), cost)
            for name, limit, cost in (("requests", limits.rpm, 1), ("tokens", limits.tpm, tokens))
            if limit
        ]
        try:
            for name, item, cost in checks:
                if cost > item.amount:
                    reason = f"This request has {cost} {name}; your key allows {item.amount} {name} per minute."
                    await self._refuse(key_id, checks, name=name, reason=reason)
                if not await self._limiter.test(item, key_id, name, cost=cost):
                    await self._refuse(key_id, checks, name=name, reason=self._reason(name, item.amount))
            for name, item, cost in checks:
                if not await self._limiter.hit(item, key_id, name, cost=cost):
                    await self._refuse(key_id, checks, name=name, reason=self._reason(name, item.amount))
            return RateLimitState(windows=await self._windows(key_id, checks))
        except RateLimitExceededError:
            raise
        except Exception as exc:  # storage unreachable (Redis down)
            raise StoreUnavailableError(
                "The rate-limit store is unavailable; nothing was charged. Retry after the delay given."
            ) from exc

    @staticmethod
    def _reason(name: str, amount: int) -> str:
        return f"Rate limit reached: your key allows {amount} {name} per minute. Retry after the delay given."

    async def _windows(
        self, key_id: str, checks: list[tuple[str, RateLimitItemPerMinute, int]]
    ) -> tuple[RateLimitWindow, ...]:
        windows = []
        now = self._clock()
        for name, item, _cost in checks:
            stats = await self._limiter.get_window_stats(item, key_id, name)
            reset_s = max(0.0, stats.reset_time - now)
            windows.append(RateLimitWindow(name, limit=item.amount, remaining=max(0, stats.remaining), reset_s=reset_s))
        return tuple(windows)

    async def _refuse(
        self, key_id: str, checks: list[tuple[str, RateLimitItemPerMinute, int]], *, name: str, reason: str
    ) -> None:
        windows = await self._windows(key_id, checks)
        wait = next((w.reset_s for w in windows if w.name == name), 60.0)
        raise RateLimitExceededError(reason, rate_limit=RateLimitState(windows, retry_after_s=max(0.001, wait)))

    async def reset(self) -> None:
        await self._storage.reset()

    async def aclose(self) -> None:
        """Close the Redis client's connections (the in-memory storage holds none). ``limits`` gives its storages no
        close of their own, so without this every stopped gateway left its sockets to the garbage collector."""
        client = getattr(getattr(self._storage, "bridge", None), "storage", None)  # limits' redis-py client
        close = getattr(client, "aclose", None)
        if close is not None:
            # A stopped or frozen Redis: the close is bounded (the client's socket timeouts) and may fail; the
            # connections are dropped either way, and a failed close must not fail the shutdown.
            with contextlib.suppress(Exception):
                await close()
