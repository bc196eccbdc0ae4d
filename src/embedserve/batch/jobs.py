"""Batch jobs in the store: the state machine, listing, cancel, and claims with a lease.

``validating -> in_progress -> finalizing -> completed``, or ``failed`` (validation), ``cancelling -> cancelled``,
``expired``. A replica runs a job only while it holds its claim (``claimed_by`` + ``lease_until``, renewed while it
runs); a replica that dies stops renewing, and another (or the restarted one) claims the job when the lease ends.
Claims use ``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite serialises writers, which gives the same guarantee.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from embedserve.accounting.store import Store
from embedserve.batch.owner import Owner
from embedserve.batch.tables import files, jobs
from embedserve.errors import InvalidRequestError, NotFoundError

VALIDATING, IN_PROGRESS, FINALIZING, COMPLETED = "validating", "in_progress", "finalizing", "completed"
FAILED, CANCELLING, CANCELLED, EXPIRED = "failed", "cancelling", "cancelled", "expired"
ACTIVE = (VALIDATING, IN_PROGRESS, FINALIZING, CANCELLING)
WINDOWS = {"24h": 24 * 3600.0}
ENDPOINTS = frozenset({"/v1/embeddings"})


@dataclass(frozen=True, slots=True)
class JobRecord:
    id: str
    key_id: str | None
    input_file_id: str
    endpoint: str
    completion_window: str
    status: str
    errors: str | None
    metadata: str | None
    model: str | None
    output_file_id: str | None
    error_file_id: str | None
    total: int
    completed: int
    failed: int
    inputs_total: int
    inputs_done: int
    tokens_total: int
    tokens_done: int
    credits_total: int
    credits_done: int
    chunk_lines: int
    hold_id: str | None
    credits_per_1k: float | None
    claimed_by: str | None
    lease_until: float | None
    attempts: int
    created_at: float
    expires_at: float
    in_progress_at: float | None
    finalizing_at: float | None
    completed_at: float | None
    failed_at: float | None
    expired_at: float | None
    cancelling_at: float | None
    cancelled_at: float | None


def _record(row: Any) -> JobRecord:
    return JobRecord(**row._mapping)


class JobStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def create(
        self, *, owner: Owner, input_file_id: str, endpoint: str, window: str, metadata: dict[str, str] | None,
        chunk_lines: int,
    ) -> JobRecord:  # fmt: skip
        if endpoint not in ENDPOINTS:
            raise InvalidRequestError(
                f"'endpoint' must be '/v1/embeddings' on this server (got '{endpoint}').", param="endpoint"
            )
        if window not in WINDOWS:
            raise InvalidRequestError(f"'completion_window' must be '24h' (got '{window}').", param="completion_window")
        now = time.time()
        job_id = f"batch_{uuid.uuid4().hex}"
        async with self.store.begin() as conn:
            # Locks the file's row against a delete racing this create (which checks for active jobs under it).
            source = sa.select(files.c.id).where(files.c.id == input_file_id).with_for_update(read=True)
            if (await conn.execute(source)).first() is None:
                raise NotFoundError(f"No such file: '{input_file_id}'.", param="input_file_id")
            await conn.execute(
                jobs.insert().values(
                    id=job_id, key_id=owner.key_id, input_file_id=input_file_id, endpoint=endpoint,
                    completion_window=window, status=VALIDATING, metadata=json.dumps(metadata) if metadata else None,
                    chunk_lines=chunk_lines, created_at=now, expires_at=now + WINDOWS[window],
                )
            )  # fmt: skip
        return await self.get(job_id, owner=owner)

    async def get(self, job_id: str, *, owner: Owner) -> JobRecord:
        async with self.store.begin() as conn:
            row = (await conn.execute(sa.select(jobs).where(jobs.c.id == job_id, owner.visible(jobs.c.key_id)))).first()
        if row is None:
            raise NotFoundError(f"No such batch: '{job_id}'.", param="batch_id")
        return _record(row)

    async def list(self, *, owner: Owner, limit: int, after: str | None) -> Sequence[JobRecord]:
        query = sa.select(jobs).where(owner.visible(jobs.c.key_id))
        if after:
            anchor = await self.get(after, owner=owner)
            query = query.where(
                sa.or_(
                    jobs.c.created_at < anchor.created_at,
                    sa.and_(jobs.c.created_at == anchor.created_at, jobs.c.id < anchor.id),
                )
            )
        query = query.order_by(jobs.c.created_at.desc(), jobs.c.id.desc()).limit(limit)
        async with self.store.begin() as conn:
            return [_record(row) for row in await conn.execute(query)]

    async def cancel(self, job_id: str, *, owner: Owner) -> JobRecord:
        job = await self.get(job_id, owner=owner)
        async with self.store.begin() as conn:
            await conn.execute(
                jobs.update()
                .where(jobs.c.id == job.id, jobs.c.status.in_([VALIDATING, IN_PROGRESS]))
                .values(status=CANCELLING, cancelling_at=time.time())
            )
        job = await self.get(job_id, owner=owner)
        if job.status not in (CANCELLING, CANCELLED):
            raise InvalidRequestError(f"Batch '{job_id}' is {job.status} and can no longer be cancelled.")
        return job

    async def in_use(self, file_id: str) -> bool:
        query = sa.select(jobs.c.id).where(jobs.c.input_file_id == file_id, jobs.c.status.in_(ACTIVE)).limit(1)
        async with self.store.begin() as conn:
            return (await conn.execute(query)).first() is not None

    async def claim(self, *, holder: str, lease_s: float) -> JobRecord | None:
        """Take one active job nobody holds (or whose holder's lease ran out), oldest first."""
        now = time.time()
        async with self.store.begin() as conn:
            query = (
                sa.select(jobs.c.id)
                .where(jobs.c.status.in_(ACTIVE), sa.or_(jobs.c.lease_until.is_(None), jobs.c.lease_until < now))
                .order_by(jobs.c.created_at)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
            job_id = (await conn.execute(query)).scalar()
            if job_id is None:
                return None
            await conn.execute(
                jobs.update().where(jobs.c.id == job_id).values(claimed_by=holder, lease_until=now + lease_s)
            )
            return _record((await conn.execute(sa.select(jobs).where(jobs.c.id == job_id))).one())

    async def renew(self, job_id: str, *, holder: str, lease_s: float) -> bool:
        async with self.store.begin() as conn:
            done = await conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.claimed_by == holder)
                .values(lease_until=time.time() + lease_s)
            )
        return bool(done.rowcount == 1)

    async def release(self, job_id: str, *, holder: str) -> None:
        async with self.store.begin() as conn:
            await conn.execute(
                jobs.update().where(jobs.c.id == job_id, jobs.c.claimed_by == holder).values(lease_until=None)
            )

    async def inactive(self, job_ids: Sequence[str]) -> set[str]:
        """Those of ``job_ids`` that are finished (or unknown): nothing will write their parts again."""
        query = sa.select(jobs.c.id).where(jobs.c.id.in_(job_ids), jobs.c.status.in_(ACTIVE))
        async with self.store.begin() as conn:
            active = set((await conn.execute(query)).scalars())
        return set(job_ids) - active

    async def reload(self, job_id: str) -> JobRecord:
        return await self.get(job_id, owner=Owner(key_id=None, admin=True))
