"""The accounting database and Redis stopped and frozen under a live server: 503 + Retry-After in the envelope,
``/ready`` says so, settlements are retried, nothing stays reserved, and the server recovers on its own."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import sqlalchemy as sa

from embedserve.accounting.ratelimit import RateLimiter
from embedserve.accounting.schema import api_keys, ledger
from embedserve.accounting.store import Store
from embedserve.accounting.store_gateway import StoreGateway
from embedserve.accounting.values import Limits
from tests.faults.conftest import ADMIN_KEY
from tests.faults.services import PrivatePostgres, PrivateRedis
from tests.gateway_support import upgraded
from tests.integration.gateway.processes import Server, create_key, start_server
from tests.serverproc import free_port

SEED = {"input": "Laura is a DJ.", "model": "BAAI/bge-large-en-v1.5"}


async def _rows(url: str, key_id: str) -> tuple[int | None, dict[str, int]]:
    store = Store(url)
    try:
        async with store.begin() as conn:
            balance = (await conn.execute(sa.select(api_keys.c.credits).where(api_keys.c.id == key_id))).scalar()
            statuses = dict(
                (r.status, r.n)
                for r in await conn.execute(
                    sa.select(ledger.c.status, sa.func.count().label("n"))
                    .where(ledger.c.key_id == key_id)
                    .group_by(ledger.c.status)
                )
            )
    finally:
        await store.dispose()
    return balance, statuses


def _gateway(url: str, *, lease_s: float = 3.0, clock: object = time.time) -> StoreGateway:
    return StoreGateway(
        store=Store(url, timeout_s=1.0), limiter=RateLimiter(), credits_per_1k_tokens=1000.0, admin_key=ADMIN_KEY,
        default_limits=Limits(), lease_s=lease_s, clock=clock, announce=lambda _: None,  # type: ignore[arg-type]
    )  # fmt: skip


async def _eventually(check: object, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if await check():  # type: ignore[operator]
            return
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.2)


async def test_a_settlement_the_database_refused_is_written_once_it_is_back(
    private_pg: PrivatePostgres, pg_db: str
) -> None:
    gw = _gateway(pg_db)
    await gw.start()
    try:
        key = await gw.keys.create(name="outage", credits=100)
        principal = await gw.authenticate(key.secret)
        admission = await gw.admit(principal, request_id="r1", model="m", inputs=1, tokens=1)
        private_pg.stop()
        try:
            started = time.monotonic()
            await gw.settle(admission, ok=True)  # the result was computed: the charge must not be lost
            assert time.monotonic() - started < 8
            assert not await gw.ready()
        finally:
            private_pg.start()

        async def charged() -> bool:
            return (await _rows(pg_db, key.info.id))[1] == {"charged": 1}

        await _eventually(charged, timeout=20)
        assert await gw.ready()
        assert (await _rows(pg_db, key.info.id))[0] == 99
    finally:
        await gw.stop()


async def test_own_stale_reservations_are_swept_while_the_process_lives(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'es.db'}"
    await upgraded(url)
    offset = [0.0]
    gw = _gateway(url, lease_s=0.6, clock=lambda: time.time() + offset[0])
    await gw.start()
    try:
        key = await gw.keys.create(name="sweep", credits=10)
        principal = await gw.authenticate(key.secret)
        # A reservation no request of this process holds any more (its settlement was lost), and one in flight.
        await gw.ledger.reserve(key_id=key.info.id, request_id="lost", model="m", inputs=1, tokens=1, credits=3)
        held = await gw.admit(principal, request_id="held", model="m", inputs=1, tokens=1)
        offset[0] = 60.0

        async def swept() -> bool:
            return (await _rows(url, key.info.id)) == (9, {"reconciled": 1, "reserved": 1})

        await _eventually(swept, timeout=10)
        await gw.settle(held, ok=True)
        assert await _rows(url, key.info.id) == (9, {"reconciled": 1, "charged": 1})
    finally:
        await gw.stop()


def _start(env: dict[str, str], tmp_path: Path) -> Server:
    return start_server(port=free_port(), env={"EMBEDSERVE_ADMIN_KEY": ADMIN_KEY, **env}, log_path=tmp_path / "s.log")


def _post(server: Server, secret: str) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    r = httpx.post(f"{server.url}/v1/embeddings", json=SEED, headers={"Authorization": f"Bearer {secret}"}, timeout=60)
    return r, time.monotonic() - started


def _assert_unavailable(r: httpx.Response, elapsed: float, *, bound: float) -> None:
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "store_unavailable"
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert int(r.headers["retry-after"]) > 0
    assert elapsed < bound, f"the 503 took {elapsed:.1f}s"


def _wait_ok(server: Server, secret: str, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _post(server, secret)[0].status_code != 200:
        assert time.monotonic() < deadline, "the server did not recover after the store came back"
        time.sleep(0.3)


def test_database_stopped_and_frozen_under_a_live_server(
    private_pg: PrivatePostgres, pg_db: str, tmp_path: Path
) -> None:
    key = create_key(["--database-url", pg_db], credits=1000)
    env = {"EMBEDSERVE_DATABASE_URL": pg_db, "EMBEDSERVE_GATEWAY_LEASE_SECONDS": "3",
           "EMBEDSERVE_DATABASE_TIMEOUT_SECONDS": "1"}  # fmt: skip
    server = _start(env, tmp_path)
    try:
        assert _post(server, key["secret"])[0].status_code == 200
        for fault, recover in ((private_pg.stop, private_pg.start), (private_pg.freeze, private_pg.thaw)):
            fault()
            try:
                r, elapsed = _post(server, key["secret"])
                print(f"\n{fault.__name__}: 503 after {elapsed:.2f}s", end="")
                _assert_unavailable(r, elapsed, bound=8)
                assert httpx.get(f"{server.url}/ready", timeout=10).status_code == 503
                health = time.monotonic()
                assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200
                assert time.monotonic() - health < 1
            finally:
                recover()
            recovering = time.monotonic()
            _wait_ok(server, key["secret"], timeout=30)
            print(f", 200 again {time.monotonic() - recovering:.2f}s after {recover.__name__}", end="")
            assert httpx.get(f"{server.url}/ready", timeout=10).status_code == 200
        assert "Traceback" not in server.log()
    finally:
        server.stop()
    balance, statuses = asyncio.run(_rows(pg_db, key["id"]))
    assert "reserved" not in statuses and balance == 1000 - statuses.get("charged", 0)


def test_redis_stopped_and_frozen_under_a_live_server(private_redis: PrivateRedis, tmp_path: Path) -> None:
    data = tmp_path / "data"
    key = create_key(["--data-dir", str(data)], rpm=10_000)
    server = _start({"EMBEDSERVE_DATA_DIR": str(data), "EMBEDSERVE_REDIS_URL": private_redis.url}, tmp_path)
    try:
        assert _post(server, key["secret"])[0].status_code == 200
        private_redis.freeze()
        try:
            _assert_unavailable(*_post(server, key["secret"]), bound=6)
        finally:
            private_redis.thaw()
        private_redis.stop()
        _assert_unavailable(*_post(server, key["secret"]), bound=6)
        private_redis.start()
        _wait_ok(server, key["secret"], timeout=20)
    finally:
        server.stop()
