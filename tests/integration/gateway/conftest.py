"""Real-database fixtures: a SQLite file and a fresh PostgreSQL database per test, and Redis db 7."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.gateway_support import flush_redis, pg_database, pg_reachable, redis_reachable, upgraded


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    if not await pg_reachable():
        pytest.skip("PostgreSQL at 127.0.0.1:5432 (database 'test') is unreachable; start it with .ci/run")
    async with pg_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """Each store test runs on both databases, its schema upgraded with the shipped migrations."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'embedserve.db'}"
        await upgraded(url)
        yield url
        return
    if not await pg_reachable():
        pytest.skip("PostgreSQL at 127.0.0.1:5432 (database 'test') is unreachable; start it with .ci/run")
    async with pg_database() as url:
        await upgraded(url)
        yield url


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    if not await redis_reachable():
        pytest.skip("Redis at 127.0.0.1:6379 is unreachable; start it with .ci/run")
    from tests.gateway_support import REDIS_URL

    await flush_redis()
    yield REDIS_URL
    await flush_redis()
