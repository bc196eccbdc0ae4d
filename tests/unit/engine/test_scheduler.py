"""The scheduler with a recording fake backend: budgets, order, cancellation, back-pressure, shutdown."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from embedserve.engine.encoding import Encoding
from embedserve.engine.scheduler import BatchStats, EmbedTiming, Scheduler, SchedulerConfig
from embedserve.errors import EngineError, ServerOverloadedError, ServiceUnavailableError


class RecordingBackend:
    """Returns each row's first token id as its vector; records every batch; can be paused or made to fail.

    ``await running()`` returns once a batch has reached ``forward`` (held there while ``gate`` is clear)."""

    name = "recording"
    dtype = "float32"
    device = "cpu"

    def __init__(self) -> None:
        self.batches: list[list[int]] = []  # real lengths per batch
        self.threads: set[str] = set()
        self.gate = threading.Event()
        self.gate.set()
        self.fail = False
        self._loop = asyncio.get_running_loop()
        self._entered = asyncio.Event()

    async def running(self) -> None:
        await asyncio.wait_for(self._entered.wait(), timeout=10)

    def forward(self, ids: npt.NDArray[np.int64], mask: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        self._loop.call_soon_threadsafe(self._entered.set)
        self.gate.wait(timeout=10)
        self.threads.add(threading.current_thread().name)
        self.batches.append([int(m.sum()) for m in mask])
        if self.fail:
            raise RuntimeError("device lost")
        return ids[:, :1].astype(np.float32)

    def close(self) -> None:
        pass


def enc(length: int, tag: int = 7) -> Encoding:
    return Encoding(ids=(tag,) + (1,) * (length - 1))


def make(backend: RecordingBackend, **overrides: int) -> Scheduler:
    cfg: dict[str, Any] = {
        "pad_id": 0,
        "max_batch_tokens": 64,
        "max_batch_size": 8,
        "max_queued_tokens": 10_000,
        **overrides,
    }
    return Scheduler(backend, SchedulerConfig(clock=lambda: 100.0, **cfg))


async def test_results_come_back_in_input_order_on_one_thread() -> None:
    backend = RecordingBackend()
    sched = make(backend)
    sched.start()
    futures = sched.submit([enc(3, tag=i + 10) for i in range(20)])
    rows = await asyncio.gather(*futures)
    assert [int(r[0]) for r in rows] == list(range(10, 30))
    assert len(backend.threads) == 1 and next(iter(backend.threads)).startswith("embedserve-inference")
    await sched.stop()


async def test_every_batch_respects_token_budget_and_size() -> None:
    backend = RecordingBackend()
    sched = make(backend, max_batch_tokens=64, max_batch_size=8)
    sched.start()
    lengths = [3, 30, 5, 17, 60, 2, 9, 33, 4, 12] * 5
    await asyncio.gather(*sched.submit([enc(n) for n in lengths]))
    assert sorted(n for b in backend.batches for n in b) == sorted(lengths)
    for batch in backend.batches:
        assert max(batch) * len(batch) <= 64 and len(batch) <= 8
    await sched.stop()


async def test_large_request_is_split_not_refused() -> None:
    backend = RecordingBackend()
    sched = make(backend, max_batch_size=256, max_batch_tokens=16384)
    sched.start()
    rows = await asyncio.gather(*sched.submit([enc(4) for _ in range(2048)]))
    assert len(rows) == 2048 and len(backend.batches) >= 8
    await sched.stop()


async def test_cancelled_entries_are_skipped() -> None:
    backend = RecordingBackend()
    backend.gate.clear()  # hold the first batch so the rest waits in the queue
    sched = make(backend, max_batch_size=1)
    sched.start()
    first = sched.submit([enc(5)])
    gone = sched.submit([enc(9) for _ in range(5)])
    kept = sched.submit([enc(6)])
    await backend.running()
    for fut in gone:
        fut.cancel()
    backend.gate.set()
    await asyncio.gather(*first, *kept)
    # At most one batch was already prepared (prefetched) before the cancel; the rest never ran.
    assert [n for b in backend.batches for n in b].count(9) <= 1
    assert sched.queued_tokens == 0
    await sched.stop()


async def test_queue_bound_gives_503_with_retry_after() -> None:
    backend = RecordingBackend()
    backend.gate.clear()
    sched = make(backend, max_queued_tokens=100, max_batch_size=1)
    sched.start()
    held = sched.submit([enc(10)])
    await backend.running()  # taken off the queue: the queue is empty again
    queued = sched.submit([enc(50)])
    with pytest.raises(ServerOverloadedError) as err:
        sched.submit([enc(60)])
    assert err.value.status == 503 and (err.value.retry_after_s or 0) >= 1
    backend.gate.set()
    await asyncio.gather(*held, *queued)
    await sched.stop()


async def test_inference_failure_becomes_engine_error_on_each_input() -> None:
    backend = RecordingBackend()
    backend.fail = True
    sched = make(backend)
    sched.start()
    futures = sched.submit([enc(3), enc(4)])
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert all(isinstance(r, EngineError) and "device lost" not in r.message for r in results)
    await sched.stop()


async def test_stop_finishes_queued_work_then_refuses_new() -> None:
    backend = RecordingBackend()
    sched = make(backend, max_batch_size=1)
    sched.start()
    futures = sched.submit([enc(3) for _ in range(10)])
    await sched.stop(timeout=10)
    assert all(f.done() and not f.cancelled() and f.exception() is None for f in futures)
    with pytest.raises(ServiceUnavailableError):
        sched.submit([enc(3)])


async def test_batch_stats_report_queue_wait_and_pass_time_with_injected_clock() -> None:
    backend = RecordingBackend()
    times = iter([10.0, 12.5, 13.25])  # enqueued at 10.0; the pass starts at 12.5 and ends at 13.25
    seen: list[BatchStats] = []
    cfg = SchedulerConfig(
        pad_id=0, max_batch_tokens=64, max_batch_size=8, max_queued_tokens=1000, clock=lambda: next(times)
    )
    sched = Scheduler(backend, cfg, on_batch=seen.append)
    futures = sched_submit_before_start(sched, [enc(4), enc(2)])
    sched.start()
    await asyncio.gather(*futures)
    assert seen[0].size == 2 and seen[0].tokens == 6 and seen[0].padded_tokens == 8
    assert seen[0].queue_seconds == pytest.approx(2.5)
    assert seen[0].inference_seconds == pytest.approx(0.75)
    await sched.stop()


async def test_a_request_over_two_batches_sums_their_passes_and_queues_the_rest() -> None:
    backend = RecordingBackend()
    # submitted at 0; batch 1 runs 1 -> 3, batch 2 runs 3 -> 7 (one inference thread: one after the other)
    times = iter([0.0, 1.0, 3.0, 3.0, 7.0])
    cfg = SchedulerConfig(
        pad_id=0, max_batch_tokens=64, max_batch_size=1, max_queued_tokens=1000, clock=lambda: next(times)
    )
    sched = Scheduler(backend, cfg)
    timing = EmbedTiming()
    sched._accepting = True  # queue before the loop runs
    futures = sched.submit([enc(4), enc(2)], timing=timing)
    sched.start()
    await asyncio.gather(*futures)
    assert len(backend.batches) == 2
    assert timing.inference_seconds == pytest.approx(2.0 + 4.0)
    assert timing.queue_seconds == pytest.approx(7.0 - 6.0)  # the wait before batch 1 (none between them)
    await sched.stop()


async def test_a_prepared_batch_waiting_for_the_running_one_is_timed_from_when_it_runs() -> None:
    backend = RecordingBackend()
    backend.gate.clear()
    # submitted at 0; batch 1 starts at 1; the second request is submitted at 2 and its batch prepared at once (two
    # in flight), waiting for batch 1, which ends at 10; batch 2 then runs 10 -> 11
    times = iter([0.0, 1.0, 2.0, 10.0, 10.0, 11.0])
    seen: list[BatchStats] = []
    cfg = SchedulerConfig(
        pad_id=0, max_batch_tokens=64, max_batch_size=1, max_queued_tokens=1000, clock=lambda: next(times)
    )
    sched = Scheduler(backend, cfg, on_batch=seen.append)
    sched.start()
    first, second = EmbedTiming(), EmbedTiming()
    held = sched.submit([enc(4)], timing=first)
    await backend.running()  # batch 1 is on the inference thread, held at the gate
    queued = sched.submit([enc(4)], timing=second)
    while sched.queue_depth:  # until the scheduler has taken it as the prepared batch
        await asyncio.sleep(0)
    backend.gate.set()
    await asyncio.gather(*held, *queued)
    assert (first.queue_seconds, first.inference_seconds) == (1.0, 9.0)
    assert (second.queue_seconds, second.inference_seconds) == (8.0, 1.0)  # not 9 s of "inference" for batch 2
    assert [(b.queue_seconds, b.inference_seconds) for b in seen] == [(1.0, 9.0), (8.0, 1.0)]
    await sched.stop()


def sched_submit_before_start(
    sched: Scheduler, encodings: list[Encoding]
) -> list[asyncio.Future[npt.NDArray[np.float32]]]:
    sched._accepting = True  # queue before the loop runs, so one batch takes both
    return sched.submit(encodings)


async def test_the_idle_hook_runs_on_the_inference_thread_once_the_queue_stays_empty() -> None:
    backend = RecordingBackend()
    calls: list[tuple[int, str]] = []  # (batches run so far, thread)
    idle, loop = asyncio.Event(), asyncio.get_running_loop()

    def on_idle() -> None:
        calls.append((len(backend.batches), threading.current_thread().name))
        loop.call_soon_threadsafe(idle.set)

    cfg = SchedulerConfig(
        pad_id=0,
        max_batch_tokens=64,
        max_batch_size=8,
        max_queued_tokens=10_000,
        clock=lambda: 100.0,
        on_idle=on_idle,
        idle_delay=0.0,
    )
    sched = Scheduler(backend, cfg)
    sched.start()
    await asyncio.gather(*sched.submit([enc(30) for _ in range(8)]))  # 4 batches of 2 under the 64-token budget
    await asyncio.wait_for(idle.wait(), timeout=10)  # armed on a loop timer once the last batch is answered
    await sched.stop()
    assert len(backend.batches) == 4
    assert [n for n, _ in calls] == [4]  # not between batches while work was waiting
    assert calls[0][1].startswith("embedserve-inference")


@pytest.mark.parametrize(("free_padding_tokens", "expected"), [(512, [[400], [12, 200]]), (4096, [[12, 200, 400]])])
async def test_the_scheduler_passes_its_free_padding_size_to_batching(
    free_padding_tokens: int, expected: list[list[int]]
) -> None:
    # 400 with 12 and 200 pads to 1200 (2x the real tokens): a CPU's 512 keeps 400 apart (12 + 200 pad to 400, under
    # 512), a GPU's 4096 lets all three share one pass
    backend = RecordingBackend()
    backend.gate.clear()  # queue all three before the first batch forms
    sched = make(backend, max_batch_tokens=16384, max_batch_size=256, free_padding_tokens=free_padding_tokens)
    sched.start()
    futures = sched.submit([enc(400), enc(12), enc(200)])
    await backend.running()
    backend.gate.set()
    await asyncio.gather(*futures)
    assert sorted(sorted(b) for b in backend.batches) == sorted(expected)
    await sched.stop()
