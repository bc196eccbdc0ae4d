"""The single owner of the engine's queue: packs tokenised inputs into batches and runs them on one thread.

Each input has its own future. Up to ``in_flight`` batches are handed to the inference thread at once: with two (one
running, the next prepared) it never waits on the event loop, which is what a GPU's millisecond passes need; with
one, each batch is formed when the running one ends, from everything that arrived meanwhile (the CPU default:
``engine.default_batches_in_flight``). Inputs whose caller went away (future cancelled) are skipped.
Online inputs go first: bulk inputs (batch jobs) are batched only when no online input waits, only one bulk batch
is in flight at a time, and a bulk batch is kept within ``max_bulk_batch_tokens`` (smaller than the online budget), so
an online request arriving mid-job waits for at most one small bulk forward pass. With ``preempt_bulk`` (CPU, on a
backend that can run a pass layer by layer) it waits for at most one layer of it: the bulk pass pauses between
layers when online work arrives, the online batches run, and the bulk pass resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable, Coroutine, Generator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from embedserve.engine.backends.base import Backend, SteppedBackend
from embedserve.engine.batching import SMALL_BATCH_TOKENS, pad_batch, plan_batch
from embedserve.engine.encoding import Encoding
from embedserve.errors import EngineError, ServerOverloadedError, ServiceUnavailableError

logger = logging.getLogger(__name__)

Clock = Callable[[], float]
Vector = npt.NDArray[np.float32]


class Priority(IntEnum):
    """Lower runs first."""

    ONLINE = 0
    BULK = 1


@dataclass(slots=True)
class EmbedTiming:
    """Where one ``embed`` call's time went in the engine, filled in as its batches finish (the access line's
    ``queue_ms`` and ``inference_ms``).

    ``inference_seconds`` sums the forward passes of the batches its inputs rode in, each batch once however many of
    its inputs it carried. ``queue_seconds`` is the rest of its time in the engine, from submission until its last
    batch finished: for inputs that rode one batch, the wait before that batch ran; for several, the waits before
    and between them. The two add up to the call's time in the engine, never more."""

    queue_seconds: float = 0.0
    inference_seconds: float = 0.0
    submitted_at: float | None = None

    def add_batch(self, *, started: float, finished: float) -> None:
        """One of its batches finished (they finish in order: one inference thread)."""
        self.inference_seconds += finished - started
        submitted = started if self.submitted_at is None else self.submitted_at
        self.queue_seconds = max(0.0, finished - submitted - self.inference_seconds)


@dataclass(slots=True)
class Entry:
    encoding: Encoding
    future: asyncio.Future[Vector]
    enqueued_at: float
    priority: Priority = Priority.ONLINE
    timing: EmbedTiming | None = None


@dataclass(slots=True)
class _Stepped:
    """A bulk batch run layer by layer, across as many turns on the inference thread as pre-emption makes it take."""

    batch: list[Entry]
    steps: Generator[None, None, Vector]
    started: float | None = None  # when its first turn began
    seconds: float = 0.0  # its turns' inference time so far


@dataclass(frozen=True, slots=True)
class BatchStats:
    """One forward pass: ``queue_seconds`` is how long its oldest input waited before the pass started on the
    inference thread, ``inference_seconds`` the pass itself (not the wait for the pass before it to finish)."""

    size: int
    tokens: int
    padded_tokens: int
    queue_seconds: float
    inference_seconds: float


@dataclass(slots=True)
class _Throughput:
    """Tokens per second, smoothed, to tell a refused caller when to come back."""

    tokens_per_second: float = 2000.0

    def update(self, tokens: int, seconds: float) -> None:
        if seconds > 0:
            self.tokens_per_second = 0.8 * self.tokens_per_second + 0.2 * (tokens / seconds)


@dataclass
class SchedulerConfig:
    pad_id: int
    max_batch_tokens: int
    max_batch_size: int
    max_queued_tokens: int
    max_bulk_batch_tokens: int | None = None
    """The padded-token budget of a ``Priority.BULK`` batch (None: ``max_batch_tokens``): an online arrival waits
    behind at most one such pass."""
    max_padding_ratio: float = 0.25
    free_padding_tokens: int = SMALL_BATCH_TOKENS
    in_flight: int = 2
    clock: Clock = field(default=time.monotonic)
    on_idle: Callable[[], object] | None = None
    """Run on the inference thread once nothing has been queued or running for ``idle_delay`` seconds (the engine
    gives freed memory back there; doing it each time the queue ran dry under load cost ~10% throughput)."""
    idle_delay: float = 1.0
    preempt_bulk: bool = False
    """Pause a running bulk pass between encoder layers when online work arrives (backends with ``forward_steps``):
    on a CPU a bulk pass takes up to seconds, one layer of it a twenty-fourth of that (bge-large)."""


class Scheduler:
    def __init__(
        self,
        backend: Backend,
        config: SchedulerConfig,
        *,
        on_batch: Callable[[BatchStats], None] | None = None,
        executor: ThreadPoolExecutor | None = None,
    ) -> None:
        """``executor``: the one-thread pool to run the backend on (the engine passes the thread it loaded the model
        on, and keeps it); without one the scheduler makes its own and shuts it down in ``stop``."""
        self._backend = backend
        self._cfg = config
        self._on_batch = on_batch
        self._pending: list[Entry] = []
        self._queued_tokens = 0
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(config.in_flight)
        self._inflight: set[asyncio.Future[None]] = set()
        self._owns_executor = executor is None
        self._executor = executor or inference_executor()
        self._task: asyncio.Task[None] | None = None
        self._accepting = False
        self._rate = _Throughput()
        self._idle_timer: asyncio.TimerHandle | None = None
        self._bulk_in_flight = 0
        self._preempt = threading.Event()  # set while online work waits behind a bulk pass
        self._paused: _Stepped | None = None
        self._online_in_flight = 0
        self._stopped = False
        self.preemptions = 0
        stepped = config.preempt_bulk and hasattr(backend, "forward_steps")
        self._stepped: SteppedBackend | None = cast(SteppedBackend, backend) if stepped else None

    @property
    def queued_tokens(self) -> int:
        return self._queued_tokens

    @property
    def queue_depth(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        if self._task is None:
            self._accepting = True
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="embedserve-scheduler")

    def run_sync(self, fn: Callable[[], Vector]) -> asyncio.Future[Vector]:
        """Run ``fn`` on the inference thread (warm-up, readiness probes) without racing a batch."""
        return asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def submit(
        self, encodings: Sequence[Encoding], *, priority: Priority = Priority.ONLINE, timing: EmbedTiming | None = None
    ) -> list[asyncio.Future[Vector]]:
        """One future per encoding; ``timing``, if given, is filled in as the batches they ride in finish."""
        if not self._accepting:
            raise ServiceUnavailableError("The server is shutting down; retry on another replica.")
        tokens = sum(e.length for e in encodings)
        if self._queued_tokens and self._queued_tokens + tokens > self._cfg.max_queued_tokens:
            wait = max(1, math.ceil(self._queued_tokens / self._rate.tokens_per_second))
            raise ServerOverloadedError(
                f"The server is at capacity ({self._queued_tokens} tokens queued, limit "
                f"{self._cfg.max_queued_tokens}); retry in {wait} s.",
                retry_after_s=wait,
            )
        loop = asyncio.get_running_loop()
        now = self._cfg.clock()
        if timing is not None:
            timing.submitted_at = now
        futures = []
        for enc in encodings:
            entry = Entry(encoding=enc, future=loop.create_future(), enqueued_at=now, priority=priority, timing=timing)
            self._pending.append(entry)
            futures.append(entry.future)
        self._queued_tokens += tokens
        if priority is Priority.ONLINE and self._bulk_in_flight and not self._stopped:
            self._preempt.set()
        self._wakeup.set()
        return futures

    def _take_batch(self) -> list[Entry]:
        live = [e for e in self._pending if not e.future.done()]
        self._queued_tokens -= sum(e.encoding.length for e in self._pending if e.future.done())
        self._pending = live
        if not live:
            return []
        first = min(e.priority for e in live)
        if first is Priority.BULK and self._bulk_in_flight:
            return []  # one bulk batch at a time: an online arrival never queues behind two
        budget = self._cfg.max_batch_tokens
        if first is Priority.BULK and self._cfg.max_bulk_batch_tokens is not None:
            budget = min(budget, self._cfg.max_bulk_batch_tokens)
        return self._take_from([e for e in live if e.priority == first], live, max_tokens=budget)

    def _take_from(self, candidates: list[Entry], live: list[Entry], *, max_tokens: int) -> list[Entry]:
        lengths = [e.encoding.length for e in candidates]
        chosen = plan_batch(
            lengths,
            oldest=0,
            max_tokens=max_tokens,
            max_size=self._cfg.max_batch_size,
            max_padding_ratio=self._cfg.max_padding_ratio,
            free_padding_tokens=self._cfg.free_padding_tokens,
        )
        batch = [candidates[i] for i in chosen]
        picked = {id(e) for e in batch}
        self._pending = [e for e in live if id(e) not in picked]
        self._queued_tokens -= sum(e.encoding.length for e in batch)
        return batch

    async def _loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending or self._paused is not None:
                await self._slots.acquire()
                if batch := self._take_batch():
                    self._dispatch(batch)
                elif self._paused is not None and not self._online_in_flight:  # no online work left: it goes on
                    paused, self._paused = self._paused, None
                    self._run_stepped(paused)
                else:
                    self._slots.release()
                    break

    def _dispatch(self, batch: list[Entry]) -> None:
        loop = asyncio.get_running_loop()
        ids, mask = pad_batch([e.encoding for e in batch], pad_id=self._cfg.pad_id)
        bulk = batch[0].priority is Priority.BULK
        self._bulk_in_flight += bulk
        self._online_in_flight += not bulk
        if bulk and self._stepped is not None:
            self._run_stepped(_Stepped(batch, self._stepped.forward_steps(ids, mask)))
            return
        self._track(self._finish(loop.run_in_executor(self._executor, self._forward, ids, mask), batch, bulk=bulk))

    def _track(self, finishing: Coroutine[Any, Any, None]) -> None:
        """Run ``finishing`` (a pass's ``_finish`` or a turn's ``_finish_turn``), counted in flight until it ends."""
        done: asyncio.Future[None] = asyncio.ensure_future(finishing)
        self._inflight.add(done)
        done.add_done_callback(self._inflight.discard)

    def _run_stepped(self, stepped: _Stepped) -> None:
        """Start (or resume) a stepped bulk pass on the inference thread; a slot is held for it."""
        if all(e.future.done() for e in stepped.batch):  # every caller went away while it was paused
            stepped.steps.close()
            self._bulk_in_flight -= 1
            self._slots.release()
            return
        self._preempt.clear()
        work = asyncio.get_running_loop().run_in_executor(self._executor, self._steps, stepped.steps)
        self._track(self._finish_turn(work, stepped))

    def _steps(self, steps: Generator[None, None, Vector]) -> tuple[Vector | None, float, float]:
        """On the inference thread: layers until the pass ends (its vectors) or online work waits (None). At least
        one layer per turn, so a job moves on between online passes even when they come back to back."""
        started = self._cfg.clock()
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value, started, self._cfg.clock()
            if self._preempt.is_set():
                return None, started, self._cfg.clock()

    async def _finish_turn(self, work: asyncio.Future[tuple[Vector | None, float, float]], stepped: _Stepped) -> None:
        try:
            vectors, started, finished = await work
        except Exception:
            self._fail(stepped.batch)
            self._end_pass(bulk=True)
            return
        except BaseException:  # cancelled (shutdown): the slot and the bulk count go back, as a whole pass's do
            self._end_pass(bulk=True)
            raise
        stepped.started = started if stepped.started is None else stepped.started
        stepped.seconds += finished - started
        _add_to_timings(stepped.batch, started=started, finished=finished)
        if vectors is None and self._stopped:  # paused as the scheduler stopped: nothing will resume it
            stepped.steps.close()
            _shut_out(stepped.batch)
            self._end_pass(bulk=True)
            return
        if vectors is None:  # paused for online work: the loop resumes it once none waits
            self.preemptions += 1
            self._paused = stepped
            self._slots.release()
            self._wakeup.set()
            return
        self._end_pass(bulk=True)
        self._complete(stepped.batch, vectors, started=stepped.started, seconds=stepped.seconds)

    def _forward(self, ids: npt.NDArray[np.int64], mask: npt.NDArray[np.int64]) -> tuple[Vector, float, float]:
        """On the inference thread: the pass and when it started and ended. Timed here, not around the executor
        call, since a prepared batch waits there for the running one to finish."""
        started = self._cfg.clock()
        vectors = self._backend.forward(ids, mask)
        return vectors, started, self._cfg.clock()

    async def _finish(
        self, work: asyncio.Future[tuple[Vector, float, float]], batch: list[Entry], *, bulk: bool
    ) -> None:
        try:
            vectors, started, finished = await work
        except Exception:
            self._fail(batch)
            return
        finally:
            self._end_pass(bulk=bulk)
        _add_to_timings(batch, started=started, finished=finished)  # before the futures wake their callers
        self._complete(batch, vectors, started=started, seconds=finished - started)

    @staticmethod
    def _fail(batch: list[Entry]) -> None:
        logger.exception("inference failed for a batch of %d inputs", len(batch))
        for entry in batch:
            if not entry.future.done():
                entry.future.set_exception(EngineError("Inference failed on the server; it has been logged."))

    def _end_pass(self, *, bulk: bool) -> None:
        """A pass left the inference thread for good: its slot is free, and queued or paused work may go on."""
        self._slots.release()
        self._bulk_in_flight -= bulk
        self._online_in_flight -= not bulk
        if self._pending or self._paused is not None:
            self._wakeup.set()  # bulk work waits for a free engine, not only for new arrivals

    def _complete(self, batch: list[Entry], vectors: Vector, *, started: float, seconds: float) -> None:
        """Hand a finished pass's rows to their callers; ``seconds`` is its inference time (all its turns)."""
        for entry, row in zip(batch, vectors, strict=True):
            if not entry.future.done():
                entry.future.set_result(row)
        if self._cfg.on_idle is not None and not self._pending:
            if self._idle_timer is not None:
                self._idle_timer.cancel()
            self._idle_timer = asyncio.get_running_loop().call_later(self._cfg.idle_delay, self._when_idle)
        tokens = sum(e.encoding.length for e in batch)
        self._rate.update(tokens, seconds)
        if self._on_batch is not None:
            longest = max(e.encoding.length for e in batch)
            oldest = min(e.enqueued_at for e in batch)
            self._on_batch(BatchStats(len(batch), tokens, longest * len(batch), started - oldest, seconds))

    def _when_idle(self) -> None:
        self._idle_timer = None
        if self._cfg.on_idle is not None and self._accepting and not (self._pending or self._inflight or self._paused):
            self._executor.submit(self._cfg.on_idle)

    async def stop(self, *, timeout: float | None = None) -> None:
        """Stop accepting, finish what is queued (within ``timeout``), then fail whatever is left."""
        self._accepting = False
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._pending or self._inflight or self._paused is not None:
            if deadline is not None and time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.01)
        self._stopped = True  # a bulk turn still running now finishes its pass instead of pausing (none to resume it)
        self._preempt.clear()
        if self._paused is not None:
            self._pending.extend(self._paused.batch)
            self._paused.steps.close()
            self._paused = None
        _shut_out(self._pending)
        self._pending.clear()
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._owns_executor:
            self._executor.shutdown(wait=True, cancel_futures=True)


def _add_to_timings(batch: list[Entry], *, started: float, finished: float) -> None:
    """One pass (or turn of one) of ``batch`` into each of its calls' ``EmbedTiming``, once per call."""
    for timing in {id(e.timing): e.timing for e in batch if e.timing is not None}.values():
        timing.add_batch(started=started, finished=finished)


def _shut_out(entries: list[Entry]) -> None:
    """Fail the entries no pass will run, the server stopping."""
    for entry in entries:
        if not entry.future.done():
            entry.future.set_exception(ServiceUnavailableError("The server shut down before this input ran."))


def inference_executor() -> ThreadPoolExecutor:
    """The single inference thread. The model is built on it too: with OpenMP every thread that runs a parallel op
    keeps its own team of workers, and once there are more of those than cores libgomp stops spinning between ops,
    which made one short bge-large pass 46 -> 68 ms (bf16, 2 cores) when the model had been loaded on another thread."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedserve-inference")
