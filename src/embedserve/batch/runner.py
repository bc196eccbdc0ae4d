"""The in-process runner: claims jobs from the store and drives each through validation, its chunks, and the end.

Work runs on the server's own engine at ``Priority.BULK``, so online requests go first. Progress is durable per
chunk (see ``progress``); a restarted or other replica resumes a job from its recorded chunks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from embedserve.accounting.holds import hold_in
from embedserve.batch import jobs as states
from embedserve.batch.chunks import chunks_of, parse_chunk
from embedserve.batch.failures import RetryPolicy, back_off, fail_job, mark_failing, permanent_error
from embedserve.batch.files import FileRecord, FileStore
from embedserve.batch.finalize import Finalizer
from embedserve.batch.jobs import JobRecord, JobStore
from embedserve.batch.lines import LineOutcome, LineRunner
from embedserve.batch.progress import LostClaim, commit_chunk, done_chunks
from embedserve.batch.tables import jobs
from embedserve.batch.validate import MAX_REPORTED, JobLimits, Validation, validate
from embedserve.errors import EmbedServeError, StoreUnavailableError

logger = logging.getLogger(__name__)
STOP_TIMEOUT_S = 10.0

CHUNKS_IN_FLIGHT = 2


@dataclass(frozen=True, slots=True)
class RunnerConfig:
    limits: JobLimits
    lease_s: float
    poll_s: float
    clock: Callable[[], float] = time.time  # wall time, for the completion window (tests inject one)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    credits_per_1k: float = 0.0  # the price now: held with a job at validation, and charged for its lines
    price_at: Callable[[int, float], int] | None = None  # credits for (tokens, credits per 1k); None: lines' price


def new_holder() -> str:
    return f"{socket.gethostname()[:24]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


class JobDriver:
    """Runs one claimed job as far as it can go."""

    def __init__(
        self, *, jobs: JobStore, files: FileStore, lines: LineRunner, config: RunnerConfig, holder: str
    ) -> None:
        self.jobs = jobs
        self.files = files
        self.lines = lines
        self.config = config
        self.holder = holder
        self.finalizer = Finalizer(jobs=jobs, files=files, holder=holder)
        self._committing = asyncio.Lock()  # chunks run two at a time, but are recorded one at a time

    async def drive(self, job: JobRecord) -> None:
        if job.status == states.VALIDATING:
            job = await self._validate(job)
        if job.status == states.IN_PROGRESS:
            job = await self._run(job)
        if job.status in (states.FINALIZING, states.CANCELLING) or self._expired(job):
            await self.finalizer.finalize(job)

    def _expired(self, job: JobRecord) -> bool:
        return job.status == states.IN_PROGRESS and self.config.clock() > job.expires_at

    async def _input(self, job: JobRecord) -> FileRecord:
        from embedserve.batch.owner import Owner

        return await self.files.get(job.input_file_id, owner=Owner(key_id=None, admin=True))

    async def _validate(self, job: JobRecord) -> JobRecord:
        source = await self._input(job)
        result = await validate(
            self.files.path_of(source), endpoint=job.endpoint, limits=self.config.limits, runner=self.lines
        )
        if result.problems:
            return await self._fail(job, [p.as_error() for p in result.problems], total=result.total)
        try:
            await self._start(job, result)
        except EmbedServeError as exc:  # a short balance, a key revoked meanwhile: fails the job, never retried
            error = permanent_error(exc)
            if error is None:
                raise
            return await self._fail(job, [error], total=result.total)
        return await self.jobs.reload(job.id)

    async def _start(self, job: JobRecord, result: Validation) -> None:
        now = time.time()
        async with self.jobs.store.begin() as conn:
            hold_id = None
            if job.key_id is not None and result.credits > 0:
                hold_id = await hold_in(
                    conn, key_id=job.key_id, request_id=job.id, model=self.lines.service.model_name,
                    inputs=result.inputs, tokens=result.tokens, credits=result.credits, at=now,
                )  # fmt: skip
            done = await conn.execute(
                jobs.update()
                .where(jobs.c.id == job.id, jobs.c.status == states.VALIDATING, jobs.c.claimed_by == self.holder)
                .values(
                    status=states.IN_PROGRESS, in_progress_at=now, total=result.total, inputs_total=result.inputs,
                    tokens_total=result.tokens, credits_total=result.credits, hold_id=hold_id,
                    credits_per_1k=self.config.credits_per_1k,
                    model=self.lines.service.model_name,
                )
            )  # fmt: skip
            if done.rowcount != 1:  # cancelled meanwhile, or taken over: undo the hold with the transaction
                raise LostClaim(job.id)

    async def _fail(self, job: JobRecord, errors: list[dict[str, object]], *, total: int) -> JobRecord:
        extra = len(errors) - MAX_REPORTED
        data = errors[:MAX_REPORTED]
        if extra > 0:
            data.append({"code": "too_many_errors", "message": f"{extra} more lines have errors.", "line": None})
        async with self.jobs.store.begin() as conn:
            await conn.execute(
                jobs.update()
                .where(jobs.c.id == job.id, jobs.c.status.in_([states.VALIDATING, states.CANCELLING]))
                .values(
                    status=states.FAILED, failed_at=time.time(), total=total,
                    errors=json.dumps({"object": "list", "data": data}),
                )
            )  # fmt: skip
        logger.info("batch %s failed validation: %d errors", job.id, len(errors))
        return await self.jobs.reload(job.id)

    async def _run(self, job: JobRecord) -> JobRecord:
        source = await self._input(job)
        done = {c.seq for c in await done_chunks(self.jobs.store, job.id)}
        running: set[asyncio.Task[None]] = set()
        try:
            async with contextlib.aclosing(chunks_of(job, self.files.path_of(source), done)) as chunks:
                async for seq, raws in chunks:
                    while len(running) >= CHUNKS_IN_FLIGHT:
                        finished, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                        for task in finished:
                            running.discard(task)
                            task.result()
                    # looked at once a slot is free, so a cancel (or the window closing) while chunks run starts no
                    # further chunk
                    job = await self.jobs.reload(job.id)
                    if job.status != states.IN_PROGRESS or self._expired(job):
                        break
                    running.add(asyncio.create_task(self._chunk(job, seq, raws)))
            for task in running:
                await task
        finally:
            for task in running:
                task.cancel()
        job = await self.jobs.reload(job.id)
        if job.status == states.IN_PROGRESS and not self._expired(job):
            async with self.jobs.store.begin() as conn:
                await conn.execute(
                    jobs.update()
                    .where(jobs.c.id == job.id, jobs.c.status == states.IN_PROGRESS)
                    .values(status=states.FINALIZING, finalizing_at=time.time())
                )
            job = await self.jobs.reload(job.id)
        return job

    async def _chunk(self, job: JobRecord, seq: int, raws: list[bytes]) -> None:
        lines = await asyncio.to_thread(parse_chunk, raws, first=seq * job.chunk_lines, endpoint=job.endpoint)
        outcomes: list[LineOutcome] = await self.lines.run_many(lines, price=self._held_price(job))
        async with self._committing:
            await commit_chunk(
                self.jobs.store, self.files.storage, job_id=job.id, hold_id=job.hold_id, holder=self.holder, seq=seq,
                outcomes=outcomes, lease_s=self.config.lease_s,
            )  # fmt: skip

    def _held_price(self, job: JobRecord) -> Callable[[int], int] | None:
        """The price the job's credits were held at, even if the server's price changed since (a restart)."""
        price_at, rate = self.config.price_at, job.credits_per_1k
        if price_at is None or rate is None:
            return None
        return lambda tokens: price_at(tokens, rate)

    async def recover(self, job: JobRecord, exc: Exception) -> bool:
        """After ``drive`` raised: fail the job, or back off; True when the job's lease now holds a back-off."""
        error = permanent_error(exc)
        if error is None:
            attempts = await back_off(self.jobs.store, job.id, holder=self.holder, policy=self.config.retry)
            if attempts < self.config.retry.max_attempts:
                logger.warning("batch %s: attempt %d failed (%s); retried in %.0f s", job.id, attempts,
                               type(exc).__name__, self.config.retry.delay(attempts))  # fmt: skip
                return attempts > 0
            message = f"The batch failed {attempts} times in a row for a server-side reason; it was stopped."
            error = {"code": "server_error", "message": message, "param": None, "line": None}
        job = await self.jobs.reload(job.id)
        if job.in_progress_at is None:  # it failed validating: nothing ran, nothing to deliver
            if await fail_job(self.jobs.store, self.files.storage, job.id, [error]):
                logger.warning("batch %s failed: %s", job.id, error["message"])
        elif job.errors is None:
            await self._fail_running(job, error)
        elif await fail_job(self.jobs.store, self.files.storage, job.id, None):  # keeps the errors it failed with
            logger.warning("batch %s: its result files could not be written (%s); failed without them", job.id,
                           error["message"])  # fmt: skip
        return False

    async def _fail_running(self, job: JobRecord, error: dict[str, Any]) -> None:
        """A job that may have run chunks ends as an expired one does: the lines done in its output and error files,
        every line not run in the error file (``batch_failed``), the rest of its hold refunded. The failure is
        recorded first, so a crash while the files are written finishes the failure after a restart."""
        if not await mark_failing(self.jobs.store, job.id, [error], holder=self.holder):
            return  # finished meanwhile, or another replica holds it now
        logger.warning("batch %s failed: %s", job.id, error["message"])
        with contextlib.suppress(LostClaim):
            await self.finalizer.finalize(await self.jobs.reload(job.id))


class BatchWorker:
    """Claims jobs one at a time and drives them; renews the claim while it works."""

    def __init__(self, driver: JobDriver) -> None:
        self.driver = driver
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # A job's lease keeper and its claim's release run in tasks of their own, which a cancel of the worker does
        # not end: stop() waits for them, since the store they use is disposed next.
        self._trailing: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self._store_down = False

    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._loop(), name="embedserve-batch-worker")

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._stopping = True
            self._task.cancel()
            # Bounded: a cancellation swallowed inside a database driver must not hang the server's shutdown.
            deadline = asyncio.get_running_loop().time() + STOP_TIMEOUT_S
            await asyncio.wait({self._task}, timeout=STOP_TIMEOUT_S)
            if not self._task.done():
                logger.warning("batch worker did not stop within %.0f s; leaving it", STOP_TIMEOUT_S)
            self._task = None
            # Then what it left running (a release the cancel cut the wait for): otherwise its connection goes back
            # to a pool already disposed, and is never closed.
            if self._trailing:
                await asyncio.wait(set(self._trailing), timeout=max(0.0, deadline - asyncio.get_running_loop().time()))

    def _trail(self, task: asyncio.Task[Any]) -> asyncio.Task[Any]:
        self._trailing.add(task)
        task.add_done_callback(self._trailed)
        return task

    def _trailed(self, task: asyncio.Task[Any]) -> None:
        self._trailing.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a failed release is not reported (the lease runs out instead)

    async def _loop(self) -> None:
        config = self.driver.config
        while not self._stopping:
            try:
                job = await self.driver.jobs.claim(holder=self.driver.holder, lease_s=config.lease_s)
                self._store_down = False
            except StoreUnavailableError:  # one line per outage, not a traceback per poll
                if not self._store_down:
                    logger.warning("batch worker: the store is unavailable; no job is claimed until it answers")
                self._store_down = True
                job = None
            except Exception:
                logger.exception("batch claim failed")
                job = None
            if job is None:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow the cancellation that stops us.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(config.poll_s):
                        await self._wake.wait()
                self._wake.clear()
                continue
            await self._work(job)

    async def _work(self, job: JobRecord) -> None:
        keeper = self._trail(asyncio.create_task(self._keep(job.id)))
        backing_off = False
        try:
            await self.driver.drive(job)
        except LostClaim:
            await self._explain_lost(job.id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not isinstance(exc, EmbedServeError):  # ours are explained in one line by ``recover``
                logger.exception("batch %s: unexpected error while running", job.id)
            keeper.cancel()  # a renewal after the back-off is written would cut the back-off short
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            try:
                backing_off = await self.driver.recover(job, exc)
            except Exception as again:  # the store is down too: the lease runs out and the job is claimed again
                logger.warning("batch %s: could not record its failure (%r)", job.id, again)
                backing_off = True
        finally:
            keeper.cancel()
            if not backing_off:
                release = self._trail(asyncio.create_task(self.driver.jobs.release(job.id, holder=self.driver.holder)))
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await asyncio.shield(release)

    async def _explain_lost(self, job_id: str) -> None:
        """A step changed nothing because the job is not as this worker left it: another replica holds it now, or it
        moved on meanwhile (cancelled while it validated or while it expired): say which."""
        holder = self.driver.holder
        try:
            job = await self.driver.jobs.reload(job_id)
        except Exception:  # the store is away too: say what is known
            logger.warning("batch %s: it changed meanwhile (another replica, or a cancel); leaving it", job_id)
            return
        if job.claimed_by != holder:
            logger.warning("batch %s: claim lost to another replica (%s); leaving it", job_id, job.claimed_by)
        elif job.status == states.CANCELLING:
            logger.info("batch %s was cancelled meanwhile; its next claim ends it as cancelled", job_id)
        else:
            logger.info("batch %s moved on meanwhile (now %s); its next claim takes it from there", job_id, job.status)

    async def _keep(self, job_id: str) -> None:
        config = self.driver.config
        while True:
            await asyncio.sleep(config.lease_s / 3)
            with contextlib.suppress(Exception):
                await self.driver.jobs.renew(job_id, holder=self.driver.holder, lease_s=config.lease_s)
