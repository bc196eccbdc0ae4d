"""Bulk (batch-job) work yields to online work: online inputs are batched first, one bulk batch runs at a time."""

from __future__ import annotations

import asyncio

from embedserve.engine.scheduler import Priority
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
