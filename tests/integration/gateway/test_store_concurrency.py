"""N concurrent requests against a key with credits for fewer than N, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import random
import uuid
from pathlib import Path

import redis.asyncio as redis
import sqlalchemy as sa

from embedserve.accounting.schema import ledger
from embedserve.accounting.store_gateway import StoreGateway
from embedserve.errors import InsufficientQuotaError
from tests.gateway_support import make_gateway, upgraded

N = 40
CREDITS = 25


async def _request(gateway: StoreGateway, secret: str, i: int) -> str:
    principal = await gateway.authenticate(secret)
    try:
        admission = await gateway.admit(principal, request_id=f"req-{i}", model="bge", inputs=1, tokens=7)
    except InsufficientQuotaError:
        return "402"
    ok = i % 7 != 3  # some inferences fail and are refunded
    await asyncio.sleep(random.random() / 100)
    await gateway.settle(admission, ok=ok)
    return "ok" if ok else "failed"


async def _ledger_sums(gateway: StoreGateway, key_id: str) -> dict[str, int]:
    async with gateway.store.begin() as conn:
        rows = await conn.execute(
            sa.select(ledger.c.status, sa.func.sum(ledger.c.credits))
            .where(ledger.c.key_id == key_id)
            .group_by(ledger.c.status)
        )
        return {r[0]: int(r[1]) for r in rows}


async def _check(gateways: list[StoreGateway]) -> dict[str, int]:
    first = gateways[0]
    key = await first.keys.create(name="burst", credits=CREDITS)
    results = await asyncio.gather(*(_request(gateways[i % len(gateways)], key.secret, i) for i in range(N)))
    balance = (await first.keys.get(key.info.id)).credits
    sums = _ledger_sums(first, key.info.id)
    totals = await sums
    charged = totals.get("charged", 0)
    assert balance is not None and balance >= 0
    assert balance == CREDITS - charged
    assert "reserved" not in totals
    assert results.count("ok") == charged
    assert results.count("402") > 0
    return {"n": N, "credits": CREDITS, "ok": results.count("ok"), "balance": balance, "charged": charged}


async def test_concurrent_burst_never_overdraws(db_url: str) -> None:
    gateway = make_gateway(db_url)
    await gateway.start()
    try:
        figures = await _check([gateway])
    finally:
        await gateway.stop()
    print(f"\nconcurrency {db_url.split(':')[0]}: {figures}")


async def test_two_replicas_sharing_the_database_and_redis(db_url: str, redis_url: str) -> None:
    replicas = [make_gateway(db_url, redis_url=redis_url) for _ in range(2)]
    for gateway in replicas:
        await gateway.start()
    try:
        figures = await _check(replicas)
    finally:
        for gateway in replicas:
            await gateway.stop()
    print(f"\ntwo replicas {db_url.split(':')[0]}: {figures}")


async def test_replicas_share_one_rate_limit_through_redis(db_url: str, redis_url: str) -> None:
    from embedserve.errors import RateLimitExceededError

    replicas = [make_gateway(db_url, redis_url=redis_url) for _ in range(2)]
    for gateway in replicas:
        await gateway.start()
    try:
        key = await replicas[0].keys.create(name="limited", rpm=3)
        outcomes = []
        for i in range(6):
            gateway = replicas[i % 2]
            try:
                admission = await gateway.admit(
                    await gateway.authenticate(key.secret), request_id=f"r{i}", model="m", inputs=1, tokens=1
                )
                await gateway.settle(admission, ok=True)
                outcomes.append(200)
            except RateLimitExceededError:
                outcomes.append(429)
        assert outcomes == [200, 200, 200, 429, 429, 429]
    finally:
        for gateway in replicas:
            await gateway.stop()


async def test_reserve_only_burst_admits_exactly_what_the_balance_covers(db_url: str) -> None:
    """No settles, no sleeps: 60 reservations race for 20 credits across two replicas; exactly 20 win."""
    replicas = [make_gateway(db_url) for _ in range(2)]
    for gateway in replicas:
        await gateway.start()
    try:
        key = await replicas[0].keys.create(name="race", credits=20)

        async def reserve(i: int) -> bool:
            gateway = replicas[i % 2]
            try:
                await gateway.admit(
                    await gateway.authenticate(key.secret), request_id=f"r{i}", model="m", inputs=1, tokens=7
                )
            except InsufficientQuotaError:
                return False
            return True

        won = await asyncio.gather(*(reserve(i) for i in range(60)))
        totals = await _ledger_sums(replicas[0], key.info.id)
        assert sum(won) == 20 and totals == {"reserved": 20}
        assert (await replicas[0].keys.get(key.info.id)).credits == 0
    finally:
        for gateway in replicas:
            await gateway.stop()
    # A clean stop refunds what never settled. Reading it reopens the stopped store's pool: dispose of it again.
    try:
        assert (await _ledger_sums(replicas[0], key.info.id)) == {"reconciled": 20}
        assert (await replicas[0].keys.get(key.info.id)).credits == 20
    finally:
        await replicas[0].store.dispose()


async def test_a_stopped_replica_closes_its_redis_connections(tmp_path: Path, redis_url: str) -> None:
    """``stop`` closes the rate limiter's Redis client; the server names it, so Redis's CLIENT LIST shows it gone."""
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'embedserve.db'}"
    await upgraded(db_url)
    name = f"embedserve-test-{uuid.uuid4().hex[:12]}"
    gateway = make_gateway(db_url, redis_url=f"{redis_url}?client_name={name}")
    observer = redis.from_url(redis_url)

    async def named() -> int:
        return sum(1 for client in await observer.client_list() if client.get("name") == name)

    try:
        await gateway.start()
        try:
            key = await gateway.keys.create(name="limited", rpm=3)
            await gateway.admit(await gateway.authenticate(key.secret), request_id="r", model="m", inputs=1, tokens=1)
            assert await named() >= 1
        finally:
            await gateway.stop()
        assert await named() == 0
    finally:
        await observer.aclose()
