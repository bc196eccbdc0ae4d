"""A replica paused (SIGSTOP) past its lease while holding reservations: its peer reconciles them, the key's
credits are spent elsewhere, and when the paused replica resumes it must not send those results unpaid."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from embedserve.accounting.schema import api_keys, ledger
from embedserve.accounting.store import Store
from tests.faults.conftest import ADMIN_KEY
from tests.integration.gateway.processes import create_key, start_server
from tests.serverproc import free_port, spawn_server, wait_ready

# 16 inputs of ~202 MiniLM/bge tokens = 3,232 tokens: 4 credits a request. Slow enough on the MiniLM replica that a
# burst keeps reservations open for seconds.
HEAVY = {"input": [" ".join(["word"] * 200)] * 16}
START_CREDITS = 40


async def _ledger(url: str, key_id: str) -> tuple[int, dict[str, int], dict[str, int]]:
    store = Store(url)
    try:
        async with store.begin() as conn:
            balance = (await conn.execute(sa.select(api_keys.c.credits).where(api_keys.c.id == key_id))).scalar()
            rows = list(
                await conn.execute(sa.select(ledger.c.status, ledger.c.credits).where(ledger.c.key_id == key_id))
            )
    finally:
        await store.dispose()
    counts: dict[str, int] = {}
    credits: dict[str, int] = {}
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
        credits[row.status] = credits.get(row.status, 0) + row.credits
    return int(balance or 0), counts, credits


async def _until(check: object, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


@pytest.mark.slow  # ~50-80 s: a MiniLM replica, a lease to run out, credits to spend elsewhere
async def test_a_replica_paused_past_its_lease_sends_no_unpaid_result(
    pg_db: str, minilm_model_dir: Path, tmp_path: Path
) -> None:
    key = create_key(["--database-url", pg_db], credits=START_CREDITS)
    env = {"EMBEDSERVE_DATABASE_URL": pg_db, "EMBEDSERVE_ADMIN_KEY": ADMIN_KEY,
           "EMBEDSERVE_GATEWAY_LEASE_SECONDS": "2"}  # fmt: skip
    paused = spawn_server(
        ["--model", str(minilm_model_dir), "--backend", "torch", "--dtype", "float32", "--threads", "1"],
        log_path=tmp_path / "paused.log", env=env,
    )  # fmt: skip
    peer = start_server(port=free_port(), env=env, log_path=tmp_path / "peer.log")
    try:
        wait_ready(paused)
        headers = {"Authorization": f"Bearer {key['secret']}"}
        async with httpx.AsyncClient(timeout=120, headers=headers) as client:
            burst = [
                asyncio.ensure_future(client.post(f"{paused.base_url}/v1/embeddings", json=HEAVY)) for _ in range(12)
            ]

            async def holding() -> bool:
                return (await _ledger(pg_db, key["id"]))[1].get("reserved", 0) >= 3

            await _until(holding, timeout=30, what="reservations in flight on the replica")
            os.kill(paused.proc.pid, signal.SIGSTOP)
            try:

                async def reconciled() -> bool:
                    counts = (await _ledger(pg_db, key["id"]))[1]
                    return counts.get("reserved", 0) == 0 and counts.get("reconciled", 0) > 0

                await _until(reconciled, timeout=30, what="the peer to reconcile the paused replica")
                spent = []
                while True:  # the refunded credits are spent through the peer
                    r = await client.post(f"{peer.url}/v1/embeddings", json=HEAVY)
                    if r.status_code != 200:
                        assert r.status_code == 402, r.text
                        break
                    spent.append(r.json()["meta"]["usage"]["credits_used"])
            finally:
                os.kill(paused.proc.pid, signal.SIGCONT)
            resumed = await asyncio.gather(*burst)
    finally:
        paused.kill()
        peer.stop()
    statuses = [r.status_code for r in resumed]
    served = sum(r.json()["meta"]["usage"]["credits_used"] for r in resumed if r.status_code == 200) + sum(spent)
    balance, counts, credits = await _ledger(pg_db, key["id"])
    print(f"\npaused replica: resumed statuses {sorted(statuses)}, peer spent {sum(spent)} credits, "
          f"credits served {served} of {START_CREDITS}, ledger {counts}, balance {balance}")  # fmt: skip
    assert set(statuses) <= {200, 402}, [r.text for r in resumed if r.status_code not in (200, 402)]
    assert 402 in statuses, "no result was fenced: the sequence did not reproduce the lapse"
    for r in resumed:
        if r.status_code == 402:
            assert r.json()["error"]["code"] == "insufficient_quota"
    assert served <= START_CREDITS and served == credits.get("charged", 0) == START_CREDITS - balance
    assert "reserved" not in counts
