"""Shared helpers for the accounting tests: throwaway databases, a Redis db we own, started gateways."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from embedserve.accounting.ratelimit import RateLimiter
from embedserve.accounting.store import Store
from embedserve.accounting.store_gateway import StoreGateway
from embedserve.accounting.values import Limits

PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/test"
PG_URL_TEMPLATE = "postgresql+asyncpg://postgres@127.0.0.1:5432/{db}"
REDIS_URL = "redis://127.0.0.1:6379/7"  # db 7 belongs to these tests; flushed before and after


async def pg_reachable() -> bool:
    import asyncpg

    try:
        conn = await asyncio.wait_for(asyncpg.connect(PG_ADMIN_DSN), timeout=3)
    except Exception:
        return False
    await conn.close()
    return True


@asynccontextmanager
async def pg_database() -> AsyncIterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards; yields its SQLAlchemy URL."""
    import asyncpg

    name = f"esgw_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    try:
        yield PG_URL_TEMPLATE.format(db=name)
    finally:
        conn = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


async def redis_reachable() -> bool:
    import redis.asyncio as redis

    client = redis.from_url(REDIS_URL)
    try:
        return bool(await asyncio.wait_for(client.ping(), timeout=3))
    except Exception:
        return False
    finally:
        await client.aclose()


async def flush_redis() -> None:
    import redis.asyncio as redis

    client = redis.from_url(REDIS_URL)
    try:
        await client.flushdb()
    finally:
        await client.aclose()


def make_gateway(
    url: str,
    *,
    redis_url: str | None = None,
    credits_per_1k_tokens: float = 1.0,
    admin_key: str | None = "test-admin-key",
    default_limits: Limits | None = None,
    clock: Callable[[], float] | None = None,
    announced: list[str] | None = None,
    **kwargs: Any,
) -> StoreGateway:
    sink = announced if announced is not None else []
    extra: dict[str, Any] = {"clock": clock} if clock is not None else {}
    return StoreGateway(
        store=Store(url),
        limiter=RateLimiter(redis_url=redis_url),
        credits_per_1k_tokens=credits_per_1k_tokens,
        admin_key=admin_key,
        default_limits=default_limits or Limits(),
        announce=sink.append,
        **extra,
        **kwargs,
    )


async def upgraded(url: str) -> None:
    store = Store(url)
    try:
        await store.upgrade()
    finally:
        await store.dispose()
