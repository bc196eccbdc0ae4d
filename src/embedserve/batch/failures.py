"""What a job does when running it raises: a permanent error fails the job (its credit hold released), a transient
one backs off (the lease is kept until the back-off ends, so other jobs are claimed meanwhile) and fails the job
after ``max_attempts`` failures in a row. A job never blocks the jobs queued behind it.

A job that never started running fails at once (``fail_job``); one that may have run chunks is first marked failing
(``mark_failing``) and then ended by ``finalize`` as an expired job is, so the lines already paid for are delivered."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from embedserve.accounting.holds import release_in
from embedserve.accounting.store import Store
from embedserve.batch.jobs import ACTIVE, CANCELLING, FAILED, FINALIZING, IN_PROGRESS
from embedserve.batch.storage import Storage
from embedserve.batch.tables import jobs
from embedserve.errors import EmbedServeError


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 5
    base_s: float = 2.0
    cap_s: float = 300.0

    def delay(self, attempts: int) -> float:
        return float(min(self.cap_s, self.base_s * 2 ** max(0, attempts - 1)))


class JobFailed(Exception):
    """A permanent failure of the whole job, with the error its ``errors.data`` will show."""

    def __init__(self, code: str, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.error: dict[str, Any] = {"code": code, "message": message, "param": param, "line": None}


def permanent_error(exc: BaseException) -> dict[str, Any] | None:
    """The job's error when ``exc`` will fail again however often it is retried (a caller's error, 4xx), else None."""
    if isinstance(exc, JobFailed):
        return exc.error
    if isinstance(exc, EmbedServeError) and exc.status < 500:
        return {"code": exc.code or exc.type, "message": exc.message, "param": exc.param, "line": None}
    return None


async def fail_job(store: Store, storage: Storage, job_id: str, errors: list[dict[str, Any]] | None) -> bool:
    """Fail an active job without result files and give back what its hold still has (``errors`` None: keep those
    it has); False when it had already left the active states."""
    now = time.time()
    values: dict[str, Any] = {"status": FAILED, "failed_at": now}
    if errors is not None:
        values["errors"] = json.dumps({"object": "list", "data": errors})
    async with store.begin() as conn:
        row = (
            await conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.status.in_(ACTIVE))
                .values(**values)
                .returning(jobs.c.hold_id)
            )
        ).first()
        if row is not None and row.hold_id is not None:
            await release_in(conn, row.hold_id, at=now)
    await asyncio.to_thread(storage.remove_job_dir, job_id)
    return row is not None


async def mark_failing(store: Store, job_id: str, errors: list[dict[str, Any]], *, holder: str) -> bool:
    """Record the failure of a job that started running, before its files are written: ``finalizing`` with its
    ``errors`` (which ``finalize`` ends as ``failed``). A restart then finishes the failure instead of running the
    job again, a cancel cannot race it, and no chunk is recorded after it (``commit_chunk`` wants the job
    ``in_progress`` or ``cancelling``). False when the job is no longer this holder's to fail, or already failing."""
    async with store.begin() as conn:
        marked = await conn.execute(
            jobs.update()
            .where(
                jobs.c.id == job_id, jobs.c.claimed_by == holder, jobs.c.errors.is_(None),
                jobs.c.status.in_([IN_PROGRESS, FINALIZING, CANCELLING]),
            )
            .values(
                status=FINALIZING, finalizing_at=sa.func.coalesce(jobs.c.finalizing_at, time.time()),
                errors=json.dumps({"object": "list", "data": errors}), attempts=0,  # its files get their own retries
            )
        )  # fmt: skip
    return bool(marked.rowcount == 1)


async def back_off(store: Store, job_id: str, *, holder: str, policy: RetryPolicy) -> int:
    """Count one more transient failure and keep the job unclaimable until its back-off ends; the new count
    (0 when another replica holds the job now)."""
    async with store.begin() as conn:
        attempts = (
            await conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.claimed_by == holder)
                .values(attempts=jobs.c.attempts + 1)
                .returning(jobs.c.attempts)
            )
        ).scalar()
        if attempts is None:
            return 0
        until = time.time() + policy.delay(attempts)
        await conn.execute(sa.update(jobs).where(jobs.c.id == job_id).values(lease_until=until))
    return int(attempts)
