"""Several real server processes: two replicas sharing PostgreSQL and Redis, and kill -9 during a burst."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import sqlalchemy as sa

from embedserve.accounting.schema import api_keys, ledger
from embedserve.accounting.store import Store
from tests.integration.gateway.processes import cli, create_key, servers, start_server
from tests.serverproc import free_port

SEED = {"input": "Laura is a DJ.", "model": "BAAI/bge-large-en-v1.5"}
# 16 inputs of 402 tokens: long enough that a burst always has requests between admit and settle.
HEAVY = {"input": [" ".join(["word"] * 400)] * 16, "model": "BAAI/bge-large-en-v1.5"}


async def _ledger(url: str, key_id: str) -> tuple[int, dict[str, list[str]], dict[str, int]]:
    """The key's balance, request ids per ledger status, and credits per status."""
    store = Store(url)
    try:
        async with store.begin() as conn:
            balance = (await conn.execute(sa.select(api_keys.c.credits).where(api_keys.c.id == key_id))).scalar()
            rows = list(await conn.execute(sa.select(ledger).where(ledger.c.key_id == key_id)))
    finally:
        await store.dispose()
    ids: dict[str, list[str]] = {}
    credits: dict[str, int] = {}
    for row in rows:
        ids.setdefault(row.status, []).append(row.request_id)
        credits[row.status] = credits.get(row.status, 0) + row.credits
    assert balance is not None
    return int(balance), ids, credits


async def test_two_server_processes_share_postgresql_and_redis(pg_url: str, redis_url: str, tmp_path: Path) -> None:
    store_args = ["--database-url", pg_url]
    upgrade = cli("db", "upgrade", *store_args)
    assert upgrade.returncode == 0, upgrade.stderr
    n, start = 40, 25
    key = create_key(store_args, credits=start)
    limited = create_key(store_args, rpm=3)
    env = {
        "EMBEDSERVE_DATABASE_URL": pg_url,
        "EMBEDSERVE_REDIS_URL": redis_url,
        "EMBEDSERVE_ADMIN_KEY": "adm-0123456789-abcdefgh",
    }
    with servers(2, env=env, tmp_path=tmp_path) as (a, b):
        async with httpx.AsyncClient(timeout=30) as client:

            async def call(i: int, secret: str) -> int:
                url = (a if i % 2 else b).url + "/v1/embeddings"
                headers = {"Authorization": f"Bearer {secret}", "x-request-id": f"burst-{i}"}
                return (await client.post(url, json=SEED, headers=headers)).status_code

            statuses = await asyncio.gather(*(call(i, key["secret"]) for i in range(n)))
            limited_statuses = [await call(i, limited["secret"]) for i in range(6)]
    balance, ids, credits = await _ledger(pg_url, key["id"])
    print(f"\ntwo processes, PostgreSQL+Redis: N={n} credits={start} 200s={statuses.count(200)} "
          f"402s={statuses.count(402)} balance={balance} ledger charged={credits.get('charged', 0)}")  # fmt: skip
    assert set(statuses) <= {200, 402} and statuses.count(402) == n - start
    assert balance >= 0 and balance == start - credits.get("charged", 0)
    assert statuses.count(200) == len(ids.get("charged", [])) and "reserved" not in ids
    assert sorted(limited_statuses) == [200, 200, 200, 429, 429, 429]


async def test_kill_9_during_a_burst_loses_no_charge_and_leaves_no_reservation(tmp_path: Path) -> None:
    data = tmp_path / "data"
    url = f"sqlite+aiosqlite:///{data / 'embedserve.db'}"
    start = 10_000_000
    key = create_key(["--data-dir", str(data)], credits=start)
    env = {"EMBEDSERVE_DATA_DIR": str(data), "EMBEDSERVE_ADMIN_KEY": "adm-0123456789-abcdefgh"}
    port = free_port()
    server = start_server(port=port, env=env, log_path=tmp_path / "before.log")
    succeeded: list[str] = []
    stop_at = time.monotonic() + 1.5

    async def worker(w: int, client: httpx.AsyncClient) -> None:
        i = 0
        while time.monotonic() < stop_at + 5:
            rid = f"crash-{w}-{i}"
            i += 1
            try:
                response = await client.post(
                    f"{server.url}/v1/embeddings", json=HEAVY,
                    headers={"Authorization": f"Bearer {key['secret']}", "x-request-id": rid},
                )  # fmt: skip
            except httpx.HTTPError:
                return
            if response.status_code == 200:
                succeeded.append(rid)

    async def killer() -> None:
        await asyncio.sleep(max(0.0, stop_at - time.monotonic()))
        server.kill()

    async with httpx.AsyncClient(timeout=10) as client:
        await asyncio.gather(killer(), *(worker(w, client) for w in range(24)))
    _, before, _ = await _ledger(url, key["id"])
    dangling = len(before.get("reserved", []))

    restarted = start_server(port=port, env=env, log_path=tmp_path / "after.log")
    try:
        balance, ids, credits = await _ledger(url, key["id"])
    finally:
        restarted.stop()
    charged = ids.get("charged", [])
    print(f"\ncrash: {len(succeeded)} successes seen, {dangling} reservations dangling at kill -9, after restart "
          f"{len(charged)} charged, {len(ids.get('reconciled', []))} reconciled, 0 reserved expected, "
          f"balance {balance} = {start} - {credits.get('charged', 0)}")  # fmt: skip
    assert succeeded, "no request succeeded before the kill"
    assert dangling > 0, "the kill hit no request in flight, so start-up reconciliation went untested"
    assert len(ids.get("reconciled", [])) == dangling
    assert all(charged.count(rid) == 1 for rid in succeeded)
    assert len(charged) == len(set(charged))
    assert "reserved" not in ids
    assert balance == start - credits.get("charged", 0)
