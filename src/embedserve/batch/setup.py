"""Assembling the bulk-job parts for a server: stores, storage root, the line runner and the worker."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from embedserve.accounting.pricing import price
from embedserve.accounting.store import SQLITE_FILENAME, Store, database_url
from embedserve.batch.files import FileLimits, FileStore
from embedserve.batch.jobs import JobStore
from embedserve.batch.lines import LineCodec, LineRunner
from embedserve.batch.runner import BatchWorker, JobDriver, RunnerConfig, new_holder
from embedserve.batch.storage import Storage
from embedserve.batch.validate import JobLimits
from embedserve.engine.scheduler import Priority
from embedserve.metrics import Metrics
from embedserve.service import EmbeddingService
from embedserve.settings import Settings

logger = logging.getLogger(__name__)


@dataclass
class Batches:
    store: Store
    files: FileStore
    jobs: JobStore
    worker: BatchWorker | None
    chunk_lines: int
    eager: bool  # False: auth off and no database yet; create nothing until the first files/batches call
    release: Callable[[], None] | None = None  # what the line runner holds beyond this process (a Ray pool)
    _started: bool = False
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def start(self) -> None:
        if self.eager:
            await self.ready()

    async def ready(self) -> None:
        """The store at head (SQLite is upgraded here too: auth off has no gateway store) and the worker running."""
        async with self._lock:
            if self._started:
                return
            await self.store.ensure_schema(auto_upgrade=self.store.is_sqlite)
            await self._sweep()
            if self.worker is not None:
                self.worker.start()
            self._started = True

    async def _sweep(self) -> None:
        """Remove the parts folders of finished jobs: a crash between a job's last commit and its cleanup left them."""
        storage = self.files.storage
        found = await asyncio.to_thread(storage.job_ids)
        stale = await self.jobs.inactive(found) if found else set()
        for job_id in stale:
            await asyncio.to_thread(storage.remove_job_dir, job_id)
        if stale:
            logger.info("batch storage: removed the parts of %d finished jobs", len(stale))

    async def stop(self) -> None:
        if self.worker is not None:
            await self.worker.stop()
        await self.store.dispose()
        if self.release is not None:  # after the worker: no chunk is on the pool any more
            await asyncio.to_thread(self.release)

    def wake(self) -> None:
        """A job was created or cancelled here: look now rather than at the next poll."""
        if self.worker is not None:
            self.worker.wake()


def _line_runner(
    settings: Settings, *, service: EmbeddingService, codec: LineCodec, rate: float, metrics: Metrics | None = None
) -> tuple[LineRunner, Callable[[], None] | None]:
    """The line runner, and what stops what it holds beyond this process (a Ray pool), if anything."""
    kwargs: dict[str, Any] = {"service": service, "codec": codec, "priority": Priority.BULK,
                              "price": lambda t: price(t, credits_per_1k_tokens=rate)}  # fmt: skip
    address = settings.ray_address or os.environ.get("RAY_ADDRESS")
    if not address:
        return LineRunner(**kwargs), None
    from embedserve.batch.ray_lines import RayLineRunner, start_pool  # Ray only when asked for

    pool = start_pool(settings, address)
    return RayLineRunner(pool=pool, metrics=metrics, **kwargs), pool.stop


def build_batches(
    settings: Settings, *, service: EmbeddingService, codec: LineCodec, metrics: Metrics | None = None
) -> Batches:
    store = Store(database_url(data_dir=settings.data_dir, database_url=settings.database_url), pool_size=4)
    storage = Storage(settings.storage_dir)
    files = FileStore(
        store=store,
        storage=storage,
        limits=FileLimits(max_bytes=settings.batch_max_file_bytes, max_lines=settings.batch_max_requests),
    )
    job_store = JobStore(store)
    worker = None
    release = None
    if settings.batch_runner:
        rate = settings.credits_per_1k_tokens
        lines, release = _line_runner(settings, service=service, codec=codec, rate=rate, metrics=metrics)
        config = RunnerConfig(
            limits=JobLimits(
                max_requests=settings.batch_max_requests,
                max_inputs=settings.batch_max_inputs,
                max_line_bytes=settings.max_body_bytes,
            ),
            lease_s=settings.batch_lease_seconds,
            poll_s=settings.batch_poll_seconds,
            credits_per_1k=rate,
            price_at=lambda t, r: price(t, credits_per_1k_tokens=r),
        )
        driver = JobDriver(jobs=job_store, files=files, lines=lines, config=config, holder=new_holder())
        worker = BatchWorker(driver)
    eager = settings.auth or bool(settings.database_url) or (settings.data_dir / SQLITE_FILENAME).exists()
    return Batches(store=store, files=files, jobs=job_store, worker=worker, chunk_lines=settings.batch_chunk_lines,
                   eager=eager, release=release)  # fmt: skip
