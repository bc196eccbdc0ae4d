"""Bulk (batch-job) work yields to online work: online inputs are batched first, one bulk batch runs at a time."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from embedserve.engine.scheduler import Priority, Scheduler, SchedulerConfig, inference_executor
from embedserve.errors import ServiceUnavailableError
from tests.unit.engine.test_scheduler import RecordingBackend, enc, make


async def test_online_inputs_overtake_queued_bulk_inputs() -> None:
    backend = RecordingBackend()
    backend.gate.clear()  # hold the first batch on the inference thread while more work queues
    sched = make(backend, max_batch_tokens=8, max_batch_size=2)
    sched.start()
    bulk = sched.submit([enc(4, tag=100 + i) for i in range(6)], priority=Priority.BULK)
    await backend.running()  # the first bulk batch is on the inference thread
    online = sched.submit([enc(3, tag=1), enc(3, tag=2)])
    backend.gate.set()
    await asyncio.gather(*bulk, *online)
    # The bulk batch already running finishes; the online pair goes next, ahead of the four bulk inputs queued.
    assert backend.batches == [[4, 4], [3, 3], [4, 4], [4, 4]]
    assert [int(r[0]) for r in await asyncio.gather(*online)] == [1, 2]
    await sched.stop()


async def test_only_one_bulk_batch_is_in_flight_so_online_waits_for_at_most_one() -> None:
    backend = RecordingBackend()
    backend.gate.clear()
    sched = make(backend, max_batch_tokens=8, max_batch_size=2)
    sched.start()
    sched.submit([enc(4, tag=100 + i) for i in range(6)], priority=Priority.BULK)
    await backend.running()  # the first bulk batch is on the inference thread
    assert sched.queue_depth == 4  # one bulk batch taken; the next is not prepared behind it
    online = sched.submit([enc(4, tag=1)])
    backend.gate.set()
    await asyncio.gather(*online)
    # The online input ran second: right after the bulk batch that was already on the thread.
    assert backend.batches[1] == [4]
    await sched.stop()


async def test_a_bulk_batch_stays_within_its_own_budget_while_online_batches_use_the_full_one() -> None:
    backend = RecordingBackend()
    sched = make(backend, max_batch_tokens=64, max_batch_size=64, max_bulk_batch_tokens=16)
    sched.start()
    await asyncio.gather(*sched.submit([enc(4, tag=100 + i) for i in range(12)], priority=Priority.BULK))
    bulk_batches = list(backend.batches)
    backend.batches.clear()
    await asyncio.gather(*sched.submit([enc(4, tag=i) for i in range(16)]))
    assert sorted(n for b in bulk_batches for n in b) == [4] * 12
    assert all(max(b) * len(b) <= 16 for b in bulk_batches)
    assert max(max(b) * len(b) for b in backend.batches) > 16  # online work is not held to the bulk budget
    await sched.stop()


class SteppedBackend(RecordingBackend):
    """A ``RecordingBackend`` whose passes also run in ``layers`` steps: each step takes one of ``permits`` (unlimited
    unless ``hold()`` was called) and records its batch's lengths in ``steps``, so a test can let a pass run exactly
    so many layers."""

    def __init__(self, layers: int = 4) -> None:
        super().__init__()
        self.layers = layers
        self.steps: list[list[int]] = []
        self.permits: threading.Semaphore | None = None
        self.closed = 0

    def hold(self) -> None:
        self.permits = threading.Semaphore(0)

    def allow(self, layers: int = 1000) -> None:
        assert self.permits is not None
        self.permits.release(layers)

    def forward_steps(
        self, ids: npt.NDArray[np.int64], mask: npt.NDArray[np.int64]
    ) -> Generator[None, None, npt.NDArray[np.float32]]:
        lengths = [int(m.sum()) for m in mask]
        try:
            for _ in range(self.layers):
                if self.permits is not None:
                    assert self.permits.acquire(timeout=10)
                self.steps.append(lengths)
                yield
        except GeneratorExit:
            self.closed += 1
            raise
        self.batches.append(lengths)
        return ids[:, :1].astype(np.float32)


def make_stepped(backend: SteppedBackend, executor: ThreadPoolExecutor | None = None, **overrides: int) -> Scheduler:
    cfg: dict[str, Any] = {
        "pad_id": 0,
        "max_batch_tokens": 8,
        "max_batch_size": 2,
        "max_queued_tokens": 10_000,
        "in_flight": 1,  # the CPU default, where pre-emption is on
    }
    config = SchedulerConfig(clock=lambda: 100.0, preempt_bulk=True, **{**cfg, **overrides})
    return Scheduler(backend, config, executor=executor)


async def wait_for(condition: Callable[[], bool]) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in 10 s")


@pytest.mark.parametrize("in_flight", [1, 2])
async def test_an_online_input_runs_between_the_layers_of_a_bulk_pass(in_flight: int) -> None:
    backend = SteppedBackend(layers=4)
    backend.hold()
    sched = make_stepped(backend, in_flight=in_flight)
    sched.start()
    bulk = sched.submit([enc(4, tag=100), enc(4, tag=101)], priority=Priority.BULK)
    backend.allow(1)
    await wait_for(lambda: len(backend.steps) == 1)  # the bulk pass is between its layers
    online = sched.submit([enc(3, tag=1)])
    backend.allow()
    assert [int(r[0]) for r in await asyncio.gather(*online)] == [1]
    assert [int(r[0]) for r in await asyncio.gather(*bulk)] == [100, 101]
    # The online input ran before the bulk pass's last layer, and the bulk pass ran each layer once: resumed, not
    # restarted.
    assert backend.batches == [[3], [4, 4]]
    assert backend.steps == [[4, 4]] * 4
    assert sched.preemptions == 1
    await sched.stop()


async def test_without_preemption_online_waits_for_the_whole_bulk_pass() -> None:
    backend = SteppedBackend(layers=4)
    sched = make(backend, max_batch_tokens=8, max_batch_size=2)  # preempt_bulk off: plain forward
    backend.gate.clear()
    sched.start()
    bulk = sched.submit([enc(4, tag=100), enc(4, tag=101)], priority=Priority.BULK)
    await backend.running()
    online = sched.submit([enc(3, tag=1)])
    backend.gate.set()
    await asyncio.gather(*bulk, *online)
    assert backend.batches == [[4, 4], [3]] and backend.steps == [] and sched.preemptions == 0
    await sched.stop()


async def test_a_paused_bulk_pass_whose_callers_left_is_dropped_and_work_goes_on() -> None:
    backend = SteppedBackend(layers=4)
    sched = make_stepped(backend)
    sched.start()
    backend.gate.clear()  # online passes wait on the inference thread: the bulk pass stays paused meanwhile
    backend.hold()
    bulk = sched.submit([enc(4, tag=100)], priority=Priority.BULK)
    backend.allow(1)
    await wait_for(lambda: len(backend.steps) == 1)
    online = sched.submit([enc(3, tag=1)])
    backend.allow()
    await backend.running()  # the online pass has the thread; the bulk pass is paused
    assert sched._paused is not None
    for fut in bulk:
        fut.cancel()
    backend.gate.set()
    await asyncio.gather(*online)
    await wait_for(lambda: sched._paused is None and sched._bulk_in_flight == 0)
    assert backend.closed == 1 and [4] not in backend.batches
    more = sched.submit([enc(4, tag=102)], priority=Priority.BULK)  # the bulk slot is free again
    assert [int(r[0]) for r in await asyncio.gather(*more)] == [102]
    await sched.stop()


async def pause_bulk_behind_a_held_online_pass(backend: SteppedBackend, sched: Scheduler) -> list[Any]:
    """A bulk pass paused after one layer, and an online pass held on the inference thread (``backend.gate``)."""
    backend.gate.clear()
    backend.hold()
    bulk = sched.submit([enc(4, tag=100)], priority=Priority.BULK)
    backend.allow(1)
    await wait_for(lambda: len(backend.steps) == 1)
    sched.submit([enc(3, tag=1)])
    backend.allow()
    await backend.running()
    assert sched._paused is not None
    return bulk


async def test_stop_finishes_a_paused_bulk_pass() -> None:
    backend = SteppedBackend(layers=3)
    sched = make_stepped(backend)
    sched.start()
    bulk = await pause_bulk_behind_a_held_online_pass(backend, sched)
    stopping = asyncio.ensure_future(sched.stop(timeout=10))
    await asyncio.sleep(0.05)
    backend.gate.set()  # the online pass ends; the paused bulk pass resumes and finishes within the timeout
    await stopping
    assert [int(r[0]) for r in await asyncio.gather(*bulk)] == [100]
    assert backend.steps == [[4]] * 3


async def test_stop_at_its_deadline_fails_a_paused_bulk_pass_instead_of_leaving_it_hanging() -> None:
    backend = SteppedBackend(layers=3)
    executor = inference_executor()  # the engine's own, kept past stop() as the engine keeps it
    sched = make_stepped(backend, executor)
    sched.start()
    bulk = await pause_bulk_behind_a_held_online_pass(backend, sched)
    await sched.stop(timeout=0.1)  # the online pass is still held: the deadline passes with the bulk pass paused
    with pytest.raises(ServiceUnavailableError):
        await bulk[0]
    assert backend.closed == 1
    backend.gate.set()
    executor.shutdown(wait=True)


async def test_stop_at_its_deadline_leaves_no_bulk_caller_waiting_when_a_turn_was_running() -> None:
    backend = SteppedBackend(layers=3)
    executor = inference_executor()  # the engine's own, kept past stop() as the engine keeps it
    sched = make_stepped(backend, executor)
    sched.start()
    backend.hold()
    bulk = sched.submit([enc(4, tag=100)], priority=Priority.BULK)
    backend.allow(1)
    await wait_for(lambda: len(backend.steps) == 1)  # a turn is on the inference thread, waiting for layer 2
    online = sched.submit([enc(3, tag=1)])  # asks the turn to pause
    await sched.stop(timeout=0.1)  # the deadline passes with the turn still running
    backend.allow()
    await wait_for(lambda: bulk[0].done())
    with pytest.raises(ServiceUnavailableError):
        await online[0]
    # Told to stop, the turn finishes its pass rather than pause where nothing would resume it.
    assert [int(r[0]) for r in await asyncio.gather(*bulk)] == [100]
    assert sched._paused is None
    executor.shutdown(wait=True)


async def test_a_bulk_pass_moves_at_least_one_layer_per_turn_even_with_online_work_waiting() -> None:
    """Online requests back to back must not starve a job: each turn the bulk pass gets runs one layer at least."""
    backend = SteppedBackend(layers=3)
    sched = make_stepped(backend)
    steps = backend.forward_steps(np.array([[5, 1]]), np.array([[1, 1]]))
    sched._preempt.set()  # online work is already waiting when the turn starts
    for layer in (1, 2, 3):
        assert sched._steps(steps)[0] is None and len(backend.steps) == layer
    vectors, _, _ = sched._steps(steps)  # the pass ends (its last step, after the last layer, is the pooling)
    assert vectors is not None and [int(v[0]) for v in vectors] == [5]
