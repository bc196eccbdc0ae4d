"""A job's end, whatever ended it: the done chunks' parts concatenated into its output and error files, the lines it
never ran named in the error file (expired, cancelled or failed), then one transaction that files them, sets the
final status and refunds what the credit hold still has.

Safe to crash anywhere: the files have fixed ids and are rewritten whole, and the closing transaction changes the
job only while it is still in the state it was finalised from and this replica holds it, so a finalisation that
committed is never redone (no file, line or refund twice) and two replicas never both close a job.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from embedserve.accounting.holds import release_in
from embedserve.batch import jobs as states
from embedserve.batch.chunks import lines_not_run
from embedserve.batch.files import FileRecord, FileStore
from embedserve.batch.jobs import JobRecord, JobStore
from embedserve.batch.lines import not_run_line
from embedserve.batch.owner import Owner
from embedserve.batch.progress import LostClaim, done_chunks
from embedserve.batch.storage import atomic_writer
from embedserve.batch.tables import files, jobs
from embedserve.errors import NotFoundError

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Ending:
    status: str
    stamp: str  # the column of its time
    not_run: str | None = None  # the error code of the lines never run, listed in the error file; None: none listed


def ending_of(job: JobRecord) -> Ending:
    if job.errors is not None:  # failed after it started running (``failures.mark_failing``)
        return Ending(states.FAILED, "failed_at", "batch_failed")
    if job.status == states.CANCELLING:  # cancelled before it ran (validating) has no lines counted to name
        return Ending(states.CANCELLED, "cancelled_at", "batch_cancelled" if job.in_progress_at is not None else None)
    if job.status == states.IN_PROGRESS:  # ran past its completion window
        return Ending(states.EXPIRED, "expired_at", "batch_expired")
    return Ending(states.COMPLETED, "completed_at")


def output_id(job_id: str, kind: str) -> str:
    return f"file-{uuid.uuid5(uuid.NAMESPACE_URL, f'embedserve:{job_id}:{kind}').hex}"


class Finalizer:
    def __init__(self, *, jobs: JobStore, files: FileStore, holder: str) -> None:
        self.jobs = jobs
        self.files = files
        self.holder = holder

    async def finalize(self, job: JobRecord) -> None:
        """End ``job`` (as read after its last chunk); raises ``LostClaim``, changing nothing, when another replica
        holds it or its state changed meanwhile."""
        ending = ending_of(job)
        storage = self.files.storage
        parts = await done_chunks(self.jobs.store, job.id)
        errors = [p.err_part for p in parts]
        not_run = 0
        if ending.not_run is not None:  # as OpenAI does for an expired or cancelled batch: every line not run is named
            name, not_run = await self._write_not_run(job, {p.seq for p in parts}, code=ending.not_run)
            errors.append(name)
        records: dict[str, FileRecord] = {}
        for kind, names in (("output", [p.out_part for p in parts]), ("error", errors)):
            present = [n for n in names if n]
            if not present:
                continue
            file_id = output_id(job.id, kind)
            path = storage.file_path(file_id)
            size, lines = await asyncio.to_thread(self._concatenate, job.id, present, path)
            records[f"{kind}_file_id"] = FileRecord(
                id=file_id, key_id=job.key_id, purpose="batch_output", filename=f"{job.id}_{kind}.jsonl",
                bytes=size, lines=lines, path=str(path.relative_to(storage.root)), created_at=time.time(),
            )  # fmt: skip
        await self._close(job, ending, records, not_run=not_run)
        await asyncio.to_thread(storage.remove_job_dir, job.id)

    async def _write_not_run(self, job: JobRecord, done: set[int], *, code: str) -> tuple[str | None, int]:
        """The part naming every line of the chunks not done, and how many lines it has."""
        try:
            source = await self.files.get(job.input_file_id, owner=Owner(key_id=None, admin=True))
        except NotFoundError:  # the input's record is gone (maybe why the job failed): its lines cannot be named
            logger.warning("batch %s: input file %s is gone; its lines not run are not listed", job.id,
                           job.input_file_id)  # fmt: skip
            return None, 0
        path = self.files.path_of(source)
        name = f"{code}.err"

        def write() -> int:  # the whole input is read in this one thread
            count = 0
            with atomic_writer(self.files.storage.job_dir(job.id) / name) as out:
                for line in lines_not_run(job, path, done):
                    out.write(not_run_line(line.custom_id, code=code))
                    count += 1
            return count

        count = await asyncio.to_thread(write)
        logger.info("batch %s ends with %d lines not run (%s)", job.id, count, code)
        return (name if count else None), count

    def _concatenate(self, job_id: str, names: list[str], path: os.PathLike[str]) -> tuple[int, int]:
        size = lines = 0
        folder = self.files.storage.job_dir(job_id)
        with atomic_writer(Path(path)) as out:
            for name in names:
                with (folder / name).open("rb") as part:
                    while block := part.read(1 << 20):
                        out.write(block)
                        size += len(block)
                        lines += block.count(b"\n")
        return size, lines

    async def _close(self, job: JobRecord, ending: Ending, records: dict[str, FileRecord], *, not_run: int) -> None:
        now = time.time()
        ids = {column: record.id for column, record in records.items()}
        counts = {"failed": jobs.c.failed + not_run} if not_run else {}  # request_counts as the error file has them
        async with self.jobs.store.begin() as conn:
            for record in records.values():
                exists = await conn.execute(sa.select(files.c.id).where(files.c.id == record.id))
                if exists.first() is None:
                    await self.files.file_record(record, conn)
            closed = await conn.execute(
                jobs.update()
                .where(jobs.c.id == job.id, jobs.c.status == job.status, jobs.c.claimed_by == self.holder)
                .values(status=ending.status, **{ending.stamp: now}, **ids, **counts)
            )
            if closed.rowcount != 1:  # closed already, cancelled meanwhile, or held by another replica now
                raise LostClaim(job.id)  # the records and the refund go back with the transaction
            if job.hold_id is not None:
                refunded = await release_in(conn, job.hold_id, at=now)
                if refunded:
                    logger.info("batch %s: %d held credits refunded", job.id, refunded)
        logger.info("batch %s %s by %s", job.id, ending.status, self.holder)
