"""Stopping the batch worker leaves nothing of it running on the store: the server disposes the store right after,
and a connection given back to a disposed pool is never closed (an aiosqlite or asyncpg connection left to the
garbage collector)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from embedserve.batch.tables import jobs
from tests.integration.batch.conftest import ADMIN, create_batch


async def test_a_stop_during_a_claims_release_waits_for_it(
    auth_app: Any, http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    bulk = auth_app.state.batches
    job_store = bulk.worker.driver.jobs
    release = job_store.release
    releasing, go_on = asyncio.Event(), asyncio.Event()

    async def held_release(job_id: str, *, holder: str) -> None:
        releasing.set()
        await go_on.wait()
        await release(job_id, holder=holder)

    monkeypatch.setattr(job_store, "release", held_release)
    batch_id = await create_batch(http, ADMIN, "a", text="one line")
    await asyncio.wait_for(releasing.wait(), timeout=30)  # the job ran; the worker gives its claim back

    stopping = asyncio.create_task(bulk.worker.stop())
    await asyncio.sleep(0.2)
    assert not stopping.done()  # the cancel cut the worker's wait for the release short, not the release
    go_on.set()
    await asyncio.wait_for(stopping, timeout=10)

    async with bulk.store.begin() as conn:
        lease = (await conn.execute(sa.select(jobs.c.lease_until).where(jobs.c.id == batch_id))).scalar()
    assert lease is None  # written before stop() returned
