"""A job cancelled while it runs delivers what it ran and names every line it did not run, as OpenAI does: the lines
done in its output and error files, a ``batch_cancelled`` line for each line never run, request_counts that add up
to the total, the rest of its credit hold refunded once. A cancel that lands while the job expires wins, and the
worker says so in its log."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Sequence
from typing import Any, cast

import httpx
import openai
import orjson
import pytest
import sqlalchemy as sa

from embedserve.accounting.schema import ledger
from embedserve.batch import runner
from embedserve.batch.lines import BatchLine, LineOutcome
from tests.integration.batch.conftest import CREATE, bearer, finished, jsonl, request_line, wait_for

LINES = 10  # chunks of 3 (the auth_app fixture): [r0 r1 r2] [r3 r4 r5] [r6 r7 r8] [r9]
BAD = "r1"  # a line /v1/embeddings refuses: its error line is in a chunk that ran, and it costs nothing


def _sdk(app: Any, secret: str) -> openai.AsyncOpenAI:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
    return openai.AsyncOpenAI(api_key=secret, base_url="http://test/v1", http_client=cast(Any, http), max_retries=0)


def _lines(job_lines: int) -> bytes:
    lines = [request_line(f"r{i}", {"input": f"passage number {i} of a batch that is cancelled."})
             for i in range(job_lines)]  # fmt: skip
    lines[1] = request_line(BAD, {"input": "x", "dimensions": 7})
    return jsonl(lines)


async def _ledger(app: Any, job_id: str) -> list[Any]:
    query = sa.select(ledger.c.request_id, ledger.c.status, ledger.c.credits).where(
        sa.or_(ledger.c.request_id == job_id, ledger.c.request_id.like(f"{job_id}#%"))
    )
    async with app.state.batches.store.begin() as conn:
        return list(await conn.execute(query.order_by(ledger.c.request_id)))


async def _read(client: openai.AsyncOpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [orjson.loads(x) for x in (await client.files.content(file_id)).content.splitlines()]


async def test_a_job_cancelled_mid_run_names_every_line_it_did_not_run_and_refunds_them(
    auth_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = auth_app.state.batches.worker.driver
    monkeypatch.setattr(runner, "CHUNKS_IN_FLIGHT", 1)  # the second chunk waits for the cancel; the last never runs
    run_many = driver.lines.run_many
    reached, cancelled = asyncio.Event(), asyncio.Event()

    async def the_second_chunk_waits_for_the_cancel(lines: Sequence[BatchLine], **options: Any) -> list[LineOutcome]:
        if any(line.custom_id == "r3" for line in lines):
            reached.set()
            await cancelled.wait()
        outcomes: list[LineOutcome] = await run_many(lines, **options)
        return outcomes

    monkeypatch.setattr(driver.lines, "run_many", the_second_chunk_waits_for_the_cancel)
    created = await auth_app.state.gateway.keys.create(name="batch-user", credits=100)
    key_id, secret = created.info.id, created.secret
    async with _sdk(auth_app, secret) as client:
        uploaded = await client.files.create(file=("in.jsonl", _lines(LINES)), purpose="batch")
        batch = await client.batches.create(input_file_id=uploaded.id, endpoint="/v1/embeddings",
                                            completion_window="24h")  # fmt: skip
        await asyncio.wait_for(reached.wait(), timeout=30)
        cancelling = await client.batches.cancel(batch.id)
        assert cancelling.status == "cancelling"
        cancelled.set()
        deadline = time.monotonic() + 30
        while batch.status not in ("completed", "failed", "cancelled", "expired"):
            assert time.monotonic() < deadline, batch
            await asyncio.sleep(0.05)
            batch = await client.batches.retrieve(batch.id)
        out, err = await _read(client, batch.output_file_id), await _read(client, batch.error_file_id)

    assert batch.status == "cancelled" and batch.cancelled_at is not None
    ids = [x["custom_id"] for x in out + err]
    assert sorted(ids) == sorted(f"r{i}" for i in range(LINES)) and len(ids) == len(set(ids))  # each exactly once
    not_run = [x for x in err if x["response"] is None]
    assert err[0]["custom_id"] == BAD and err[0]["response"]["status_code"] == 400
    # the chunk in flight when the cancel came finishes; none starts after it
    ran = [x["custom_id"] for x in out] + [BAD]
    assert sorted(ran) == ["r0", "r1", "r2", "r3", "r4", "r5"]
    assert [x["custom_id"] for x in not_run] == [f"r{i}" for i in range(len(ran), LINES)]
    for line in not_run:
        assert line["error"] == {
            "code": "batch_cancelled", "message": "This request was not executed because the batch was cancelled."
        }  # fmt: skip
    assert batch.request_counts is not None
    counts = batch.request_counts
    assert (counts.total, counts.completed, counts.failed) == (LINES, len(out), len(err))
    assert counts.completed + counts.failed == counts.total

    # credits: 9 held (1 a line, the bad line free); the lines delivered charged, the lines not run refunded, once
    used = sum(x["response"]["body"]["meta"]["usage"]["credits_used"] for x in out)
    assert used == len(out) and batch.model_extra and batch.model_extra["progress"]["credits_used"] == used
    rows = [(r.request_id, r.status, r.credits) for r in await _ledger(auth_app, batch.id)]
    assert rows[0] == (batch.id, "refunded", 9 - used)
    assert sorted(status for _, status, _ in rows[1:]) == ["charged"] * (len(rows) - 1)
    assert sum(credits for _, _, credits in rows[1:]) == used
    assert (await auth_app.state.gateway.keys.get(key_id)).credits == 100 - used


async def test_a_cancel_landing_while_the_job_expires_wins_and_the_log_says_so(
    auth_app: Any, http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The job's window closes after its first chunk; the cancel comes while its end (expired) is being filed, so
    that closing update changes nothing. The worker's log says the job was cancelled, not that another replica took
    it, and the next claim ends it as cancelled."""
    driver = auth_app.state.batches.worker.driver
    monkeypatch.setattr(runner, "CHUNKS_IN_FLIGHT", 1)
    late = {"by": 0.0}
    driver.config = dataclasses.replace(driver.config, clock=lambda: time.time() + late["by"])
    run_many = driver.lines.run_many

    async def first_chunk_then_the_window_closes(lines: Sequence[BatchLine], **options: Any) -> list[LineOutcome]:
        outcomes: list[LineOutcome] = await run_many(lines, **options)
        late["by"] = 25 * 3600.0
        return outcomes

    monkeypatch.setattr(driver.lines, "run_many", first_chunk_then_the_window_closes)
    created = await auth_app.state.gateway.keys.create(name="batch-user", credits=100)
    secret = created.secret
    close = driver.finalizer._close
    endings: list[str] = []

    async def cancelled_while_closing(job: Any, ending: Any, *args: Any, **kwargs: Any) -> None:
        endings.append(ending.status)
        if len(endings) == 1:
            response = await http.post(f"/v1/batches/{job.id}/cancel", headers=bearer(secret))
            assert response.status_code == 200 and response.json()["status"] == "cancelling"
        await close(job, ending, *args, **kwargs)

    monkeypatch.setattr(driver.finalizer, "_close", cancelled_while_closing)
    upload = await http.post("/v1/files", files={"file": ("in.jsonl", _lines(LINES))}, data={"purpose": "batch"},
                             headers=bearer(secret))  # fmt: skip
    with caplog.at_level(logging.INFO, logger="embedserve.batch"):
        created_batch = await http.post("/v1/batches", json={"input_file_id": upload.json()["id"], **CREATE},
                                        headers=bearer(secret))  # fmt: skip
        batch = await wait_for(http, created_batch.json()["id"], until=finished, headers=bearer(secret), timeout=30)

    assert endings == ["expired", "cancelled"]
    assert batch["status"] == "cancelled" and batch["expired_at"] is None
    messages = [r.getMessage() for r in caplog.records if r.name == "embedserve.batch.runner"]
    assert f"batch {batch['id']} was cancelled meanwhile; its next claim ends it as cancelled" in messages
    assert not [m for m in messages if "another replica" in m]
    err = (await http.get(f"/v1/files/{batch['error_file_id']}/content", headers=bearer(secret))).content
    out = (await http.get(f"/v1/files/{batch['output_file_id']}/content", headers=bearer(secret))).content
    lines = [orjson.loads(x) for x in out.splitlines() + err.splitlines()]
    assert sorted(x["custom_id"] for x in lines) == sorted(f"r{i}" for i in range(LINES))
    assert {x["error"]["code"] for x in lines if x["response"] is None} == {"batch_cancelled"}
    assert batch["request_counts"]["completed"] + batch["request_counts"]["failed"] == LINES
