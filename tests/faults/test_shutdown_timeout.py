"""SIGTERM with more queued work than ``--shutdown-timeout`` allows: the requests cut off get a 503 in the OpenAI
envelope (not uvicorn's plain-text 500) and are not charged."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx
import sqlalchemy as sa

from embedserve.accounting.schema import api_keys, ledger
from embedserve.accounting.store import Store
from tests.integration.gateway.processes import create_key
from tests.serverproc import spawn_server, wait_ready

HEAVY = {"input": [" ".join(["word"] * 200)] * 16}
CREDITS = 1_000_000


async def _ledger(url: str, key_id: str) -> tuple[int, dict[str, int], int]:
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
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    charged = sum(row.credits for row in rows if row.status == "charged")
    return int(balance or 0), counts, charged


async def test_requests_cut_off_by_the_shutdown_timeout_get_a_503_envelope_and_no_charge(
    minilm_model_dir: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    key = create_key(["--data-dir", str(data)], credits=CREDITS)
    server = spawn_server(
        ["--model", str(minilm_model_dir), "--backend", "torch", "--dtype", "float32", "--threads", "1",
         "--shutdown-timeout", "1"],
        log_path=tmp_path / "server.log", env={"EMBEDSERVE_DATA_DIR": str(data)},
    )  # fmt: skip
    try:
        wait_ready(server)
        headers = {"Authorization": f"Bearer {key['secret']}"}
        async with httpx.AsyncClient(timeout=120, headers=headers) as client:
            burst = [
                asyncio.ensure_future(client.post(f"{server.base_url}/v1/embeddings", json=HEAVY)) for _ in range(16)
            ]
            await asyncio.sleep(1.5)
            server.proc.send_signal(signal.SIGTERM)
            responses = await asyncio.gather(*burst, return_exceptions=True)
        server.proc.wait(timeout=60)
    finally:
        server.kill()
    answered = [r for r in responses if isinstance(r, httpx.Response)]
    statuses = sorted(r.status_code for r in answered)
    balance, counts, charged = await _ledger(f"sqlite+aiosqlite:///{data / 'embedserve.db'}", key["id"])
    print(f"\nshutdown past its timeout: statuses {statuses}, transport errors {len(responses) - len(answered)}, "
          f"ledger {counts}, charged {charged}")  # fmt: skip
    assert 503 in statuses, "no request was cut off by the timeout: the test proves nothing"
    for r in answered:
        assert r.status_code in (200, 503), r.text
        if r.status_code == 503:
            assert r.headers["content-type"] == "application/json"
            assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert counts.get("charged", 0) == statuses.count(200)
    assert "reserved" not in counts and balance == CREDITS - charged
    assert "Traceback" not in server.log()
