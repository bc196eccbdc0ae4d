"""A job's lines are charged the price its credits were held at, and a part never costs more than the hold has."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa

from embedserve.accounting.holds import hold_in, settle_part_in
from embedserve.accounting.schema import ledger
from embedserve.batch.failures import RetryPolicy
from embedserve.batch.tables import chunks, jobs
from tests.integration.batch.conftest import CREATE, bearer, finished, jsonl, request_line, wait_for

TEXTS = ["Laura is a DJ.", "A second passage.", "Third.", "Fourth line here.", "Fifth and last."]


async def test_lines_are_charged_the_price_held_at_validation_after_the_price_changed(
    auth_app: Any, http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = auth_app.state.batches.worker.driver
    driver.config = dataclasses.replace(driver.config, retry=RetryPolicy(max_attempts=2, base_s=0.05))
    run = driver._run

    async def after_a_restart_at_ten_times_the_price(job: Any) -> Any:
        monkeypatch.setattr(driver.lines, "price", lambda tokens: 10 * (1 if tokens else 0))
        return await run(job)

    monkeypatch.setattr(driver, "_run", after_a_restart_at_ten_times_the_price)
    created = await auth_app.state.gateway.keys.create(name="batch-user", credits=100)
    secret = created.secret
    content = jsonl([request_line(f"r{i}", {"input": t}) for i, t in enumerate(TEXTS)])
    upload = await http.post(
        "/v1/files", files={"file": ("in.jsonl", content)}, data={"purpose": "batch"}, headers=bearer(secret)
    )
    batch_id = (await http.post("/v1/batches", json={"input_file_id": upload.json()["id"], **CREATE},
                                headers=bearer(secret))).json()["id"]  # fmt: skip
    batch = await wait_for(http, batch_id, until=finished, headers=bearer(secret))
    assert batch["status"] == "completed", batch["errors"]
    assert batch["progress"]["credits_total"] == batch["progress"]["credits_used"] == 5
    assert (await auth_app.state.gateway.keys.get(created.info.id)).credits == 100 - 5


async def test_a_part_costing_more_than_the_hold_has_left_is_charged_what_is_left(auth_app: Any) -> None:
    created = await auth_app.state.gateway.keys.create(name="batch-user", credits=100)
    store = auth_app.state.batches.store
    async with store.begin() as conn:
        hold = await hold_in(conn, key_id=created.info.id, request_id="batch_x", model="m", inputs=3, tokens=30,
                             credits=3, at=time.time())  # fmt: skip
    async with store.begin() as conn:
        charged = await settle_part_in(
            conn, hold, request_id="batch_x#0", inputs=5, tokens=50, credits=5, at=time.time()
        )
    assert charged == 3
    assert (await auth_app.state.gateway.keys.get(created.info.id)).credits == 100 - 3


async def test_a_chunk_records_the_credits_it_was_charged_when_its_lines_cost_more_than_the_hold_had(
    auth_app: Any, http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job held before migration 0004 (no held price) resumed after a restart at ten times the price: its lines
    now cost 10 each against a hold of 5, so its chunks are charged 5 in all, and their rows say what was charged."""
    driver = auth_app.state.batches.worker.driver
    store = auth_app.state.batches.store
    run = driver._run

    async def resumed_at_ten_times_the_price_without_a_held_price(job: Any) -> Any:
        async with store.begin() as conn:
            await conn.execute(jobs.update().where(jobs.c.id == job.id).values(credits_per_1k=None))
        monkeypatch.setattr(driver.lines, "price", lambda tokens: 10 * (1 if tokens else 0))
        return await run(await driver.jobs.reload(job.id))

    monkeypatch.setattr(driver, "_run", resumed_at_ten_times_the_price_without_a_held_price)
    created = await auth_app.state.gateway.keys.create(name="batch-user", credits=100)
    content = jsonl([request_line(f"r{i}", {"input": t}) for i, t in enumerate(TEXTS)])
    upload = await http.post(
        "/v1/files", files={"file": ("in.jsonl", content)}, data={"purpose": "batch"}, headers=bearer(created.secret)
    )
    batch_id = (await http.post("/v1/batches", json={"input_file_id": upload.json()["id"], **CREATE},
                                headers=bearer(created.secret))).json()["id"]  # fmt: skip
    batch = await wait_for(http, batch_id, until=finished, headers=bearer(created.secret))
    assert batch["status"] == "completed", batch["errors"]

    async with store.begin() as conn:
        recorded = dict(list(await conn.execute(
            sa.select(chunks.c.seq, chunks.c.credits).where(chunks.c.job_id == batch_id))))  # fmt: skip
        charged = dict(list(await conn.execute(
            sa.select(ledger.c.request_id, ledger.c.credits)
            .where(ledger.c.request_id.like(f"{batch_id}#%"), ledger.c.status == "charged"))))  # fmt: skip
    assert {f"{batch_id}#{seq}": credits for seq, credits in recorded.items()} == charged
    assert sum(recorded.values()) == 5 == batch["progress"]["credits_used"] == batch["progress"]["credits_total"]
    assert (await auth_app.state.gateway.keys.get(created.info.id)).credits == 100 - 5
    # each line shows what it was charged: the chunk's lines add up to what the chunk was charged (they cost 10
    # each, the hold had 5 in all)
    out = await http.get(f"/v1/files/{batch['output_file_id']}/content", headers=bearer(created.secret))
    shown = [orjson.loads(x)["response"]["body"]["meta"]["usage"]["credits_used"] for x in out.content.splitlines()]
    assert len(shown) == len(TEXTS) and all(0 <= c <= 10 for c in shown)
    assert [sum(shown[:3]), sum(shown[3:])] == [recorded[0], recorded[1]]  # chunks of 3 lines (auth_app)
