"""A job that cannot run fails on its own, its held credits given back, and never holds up the jobs behind it."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from embedserve.batch.failures import RetryPolicy
from embedserve.batch.lines import BatchLine, LineOutcome
from embedserve.batch.owner import Owner
from embedserve.batch.tables import files
from embedserve.errors import NotFoundError
from tests.integration.batch.conftest import ADMIN, bearer, create_batch, finished, jsonl, request_line, wait_for

ADMIN_OWNER = Owner(key_id=None, admin=True)


async def _key(app: Any, **options: Any) -> tuple[str, str]:
    created = await app.state.gateway.keys.create(name="batch-user", **options)
    return created.info.id, created.secret


async def test_a_key_revoked_before_validation_fails_its_job_and_the_next_job_runs(
    auth_app: Any, http: httpx.AsyncClient
) -> None:
    bulk = auth_app.state.batches
    await bulk.worker.stop()
    revoked_id, revoked = await _key(auth_app, credits=100)
    _, other = await _key(auth_app, credits=100)
    first = await create_batch(http, revoked, "a")
    second = await create_batch(http, other, "b")
    await auth_app.state.gateway.keys.revoke(revoked_id)
    bulk.worker.start()
    done = await wait_for(http, second, until=finished, headers=bearer(other), timeout=30)
    assert done["status"] == "completed"
    failed = await wait_for(http, first, until=finished, timeout=30, headers=bearer(ADMIN))
    assert failed["status"] == "failed"
    assert failed["errors"]["data"][0]["code"] == "invalid_api_key"
    assert failed["output_file_id"] is None and failed["error_file_id"] is None  # nothing ran: no files


async def test_a_job_whose_input_file_vanished_fails_and_the_next_job_runs(
    auth_app: Any, http: httpx.AsyncClient
) -> None:
    bulk = auth_app.state.batches
    await bulk.worker.stop()
    _, secret = await _key(auth_app, credits=100)
    first = await create_batch(http, secret, "a")
    second = await create_batch(http, secret, "b")
    job = await bulk.jobs.reload(first)
    async with bulk.store.begin() as conn:  # as a delete that raced the create would have left it
        await conn.execute(sa.delete(files).where(files.c.id == job.input_file_id))
    bulk.worker.start()
    assert (await wait_for(http, second, until=finished, headers=bearer(secret), timeout=30))["status"] == "completed"
    failed = await wait_for(http, first, until=finished, headers=bearer(secret), timeout=30)
    assert failed["status"] == "failed" and failed["errors"]["data"][0]["code"] == "not_found"


async def test_a_job_failing_again_and_again_backs_off_then_fails_and_gives_its_credits_back(
    auth_app: Any, http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    bulk = auth_app.state.batches
    driver = bulk.worker.driver
    driver.config = dataclasses.replace(driver.config, retry=RetryPolicy(max_attempts=3, base_s=0.05))
    run_many = driver.lines.run_many
    calls: list[str] = []

    async def flaky(lines: Sequence[BatchLine], **options: Any) -> list[LineOutcome]:
        if lines[0].custom_id == "a":
            calls.append("a")
            raise RuntimeError("a transient fault")
        outcomes: list[LineOutcome] = await run_many(lines, **options)
        return outcomes

    monkeypatch.setattr(driver.lines, "run_many", flaky)
    key_id, secret = await _key(auth_app, credits=100)
    first = await create_batch(http, secret, "a")
    second = await create_batch(http, secret, "b")
    assert (await wait_for(http, second, until=finished, headers=bearer(secret), timeout=30))["status"] == "completed"
    failed = await wait_for(http, first, until=finished, headers=bearer(secret), timeout=30)
    assert failed["status"] == "failed" and failed["errors"]["data"][0]["code"] == "server_error"
    assert len(calls) == 3
    assert (await auth_app.state.gateway.keys.get(key_id)).credits == 100 - 1  # only the completed job's line


async def test_a_batch_cannot_be_created_on_a_file_deleted_after_it_was_looked_up(
    auth_app: Any, http: httpx.AsyncClient
) -> None:
    bulk = auth_app.state.batches
    _, secret = await _key(auth_app, credits=100)
    content = jsonl([request_line("a", {"input": "x"})])
    upload = await http.post(
        "/v1/files", files={"file": ("in.jsonl", content)}, data={"purpose": "batch"}, headers=bearer(secret)
    )
    source = await bulk.files.get(upload.json()["id"], owner=ADMIN_OWNER)  # the create route's lookup
    await bulk.files.delete(source.id, owner=ADMIN_OWNER)  # a delete in between
    with pytest.raises(NotFoundError):
        await bulk.jobs.create(owner=ADMIN_OWNER, input_file_id=source.id, endpoint="/v1/embeddings", window="24h",
                               metadata=None, chunk_lines=3)  # fmt: skip
