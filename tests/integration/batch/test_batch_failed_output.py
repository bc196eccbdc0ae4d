"""A job that fails after some of its chunks ran still delivers what it was charged for, as an expired job does: the
lines done in its output and error files, a ``batch_failed`` line for each line never run, the rest of its credit
hold refunded once; a crash while those files are written does not write or refund anything twice."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, cast

import httpx
import openai
import orjson
import pytest
import sqlalchemy as sa

from embedserve.accounting.schema import ledger
from embedserve.batch import runner
from embedserve.batch.failures import RetryPolicy
from embedserve.batch.finalize import Finalizer
from embedserve.batch.lines import BatchLine, LineOutcome
from embedserve.batch.progress import LostClaim
from embedserve.batch.tables import files
from tests.integration.batch.conftest import bearer, finished, jsonl, request_line, wait_for

LINES = 10  # chunks of 3 (the auth_app fixture): [r0 r1 r2] [r3 r4 r5] [r6 r7 r8] [r9]; the third one never runs
BAD = "r1"  # a line /v1/embeddings refuses: its error line is in a chunk that ran, and it costs nothing


def _sdk(app: Any, secret: str) -> openai.AsyncOpenAI:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
    return openai.AsyncOpenAI(api_key=secret, base_url="http://test/v1", http_client=cast(Any, http), max_retries=0)


def _engine_fault_from_the_third_chunk(app: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    driver = app.state.batches.worker.driver
    driver.config = dataclasses.replace(driver.config, retry=RetryPolicy(max_attempts=2, base_s=0.05))
    monkeypatch.setattr(runner, "CHUNKS_IN_FLIGHT", 1)  # chunks one after the other: which ones ran is known
    run_many = driver.lines.run_many

    async def faulty(lines: Sequence[BatchLine], **options: Any) -> list[LineOutcome]:
        if any(line.custom_id == "r6" for line in lines):
            raise RuntimeError("an engine fault")  # transient to the runner: retried, then the job fails
        outcomes: list[LineOutcome] = await run_many(lines, **options)
        return outcomes

    monkeypatch.setattr(driver.lines, "run_many", faulty)
    return driver


async def _ledger(app: Any, job_id: str) -> list[Any]:
    query = sa.select(ledger.c.request_id, ledger.c.status, ledger.c.credits).where(
        sa.or_(ledger.c.request_id == job_id, ledger.c.request_id.like(f"{job_id}#%"))
    )
    async with app.state.batches.store.begin() as conn:
        return list(await conn.execute(query.order_by(ledger.c.request_id)))


async def _files_of(app: Any, job_id: str) -> list[str]:
    async with app.state.batches.store.begin() as conn:
        rows = await conn.execute(sa.select(files.c.filename).where(files.c.filename.like(f"{job_id}_%")))
        return sorted(rows.scalars())


@pytest.mark.parametrize("crash", [False, True], ids=["straight", "crash-while-finalizing"])
async def test_a_job_failing_after_chunks_ran_delivers_them_and_refunds_the_lines_not_run(
    auth_app: Any, http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, crash: bool
) -> None:
    driver = _engine_fault_from_the_third_chunk(auth_app, monkeypatch)
    crashes: list[str] = []
    if crash:
        close = driver.finalizer._close

        async def dies_before_its_closing_commit_once(job: Any, *args: Any, **kwargs: Any) -> None:
            if crashes:
                await close(job, *args, **kwargs)
                return
            # meanwhile another replica that does not hold the job cannot end it
            other = Finalizer(jobs=driver.jobs, files=driver.files, holder="another-replica")
            with pytest.raises(LostClaim):
                await other.finalize(job)
            crashes.append(job.status)
            raise ConnectionError("the process died here: files written, nothing committed")

        monkeypatch.setattr(driver.finalizer, "_close", dies_before_its_closing_commit_once)
    created = await auth_app.state.gateway.keys.create(name="batch-user", credits=100)
    key_id, secret = created.info.id, created.secret
    lines = [request_line(f"r{i}", {"input": f"passage number {i} of a batch that fails."}) for i in range(LINES)]
    lines[1] = request_line(BAD, {"input": "x", "dimensions": 7})
    async with _sdk(auth_app, secret) as client:
        uploaded = await client.files.create(file=("in.jsonl", jsonl(lines)), purpose="batch")
        created_batch = await client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h"
        )
        batch_id = created_batch.id
        await wait_for(http, batch_id, until=finished, headers=bearer(secret), timeout=30)
        batch = await client.batches.retrieve(batch_id)
        assert batch.status == "failed" and batch.failed_at is not None
        assert batch.errors and batch.errors.data and batch.errors.data[0].code == "server_error"
        assert batch.output_file_id and batch.error_file_id
        out = [orjson.loads(x) for x in (await client.files.content(batch.output_file_id)).content.splitlines()]
        err = [orjson.loads(x) for x in (await client.files.content(batch.error_file_id)).content.splitlines()]

    assert crashes == (["finalizing"] if crash else [])
    assert [x["custom_id"] for x in out] == ["r0", "r2", "r3", "r4", "r5"]
    assert all(len(x["response"]["body"]["data"][0]["embedding"]) == 1024 for x in out)
    assert [x["custom_id"] for x in err] == [BAD, "r6", "r7", "r8", "r9"]  # no line twice, even after the crash
    assert err[0]["response"]["status_code"] == 400
    for line in err[1:]:
        assert line["response"] is None and line["error"]["code"] == "batch_failed"
    assert batch.request_counts is not None
    assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (10, 5, 5)
    assert await _files_of(auth_app, batch_id) == [f"{batch_id}_error.jsonl", f"{batch_id}_output.jsonl"]

    # 9 credits held (1 a line, the bad line free); the 5 lines delivered charged, the other 4 refunded, once
    used = sum(x["response"]["body"]["meta"]["usage"]["credits_used"] for x in out)
    assert used == 5 and batch.model_extra and batch.model_extra["progress"]["credits_used"] == used
    rows = await _ledger(auth_app, batch_id)
    assert [(r.request_id, r.status, r.credits) for r in rows] == [
        (batch_id, "refunded", 4), (f"{batch_id}#0", "charged", 2), (f"{batch_id}#1", "charged", 3)
    ]  # fmt: skip
    assert (await auth_app.state.gateway.keys.get(key_id)).credits == 100 - used
