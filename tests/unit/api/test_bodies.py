"""Big bodies in worker processes: a body whose client has hung up is dropped before its decode begins, and the worker
stays free for the next body; a decode killed for a hung-up client has its worker replaced at once."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import pytest
from starlette.requests import Request

from embedserve import errors
from embedserve.api import bodies
from embedserve.api.bodies import BodyDecoder, InputLimits
from embedserve.api.body_workers import StoppableWorker
from embedserve.metrics import Metrics

LIMITS = InputLimits(max_inputs=2048, max_chars=51_200, auto_truncate=False)
SLOW_BODY = b'{"input":[' + b",".join([b"1"] * 2_000_000) + b"]}"  # about a second of worker CPU, then a 400
# 5M ids (10 MB): 3.6-4.2 s of worker CPU (more, niced, on a busy host): still running when its client hangs up.
SLOWER_BODY = b'{"input":[' + b",".join([b"1"] * 5_000_000) + b"]}"
TEXTS = ["word " * 100] * 200
QUICK_BODY = json.dumps({"input": TEXTS}).encode()  # 100 KB: over 64 KiB, so a worker decodes it


def _request(body: bytes, *, hang_up: bool, after: float = 0.0) -> Request:
    """A request whose whole body has arrived; the client then hangs up (``after`` seconds later), or waits."""
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        if not hang_up:
            await asyncio.Event().wait()
        await asyncio.sleep(after)
        return {"type": "http.disconnect"}

    headers = [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]
    return Request({"type": "http", "method": "POST", "path": "/v1/embeddings", "headers": headers}, receive)


def _abandoned(metrics: Metrics) -> dict[str, float | None]:
    sample = metrics.registry.get_sample_value
    return {how: sample("embedserve_body_decodes_abandoned_total", {"how": how}) for how in ("skipped", "killed")}


async def _up(worker: Any, *, within: float = 60.0) -> bool:
    """Whether ``worker`` (a slot's StoppableWorker, or None) is up within ``within`` seconds, nobody asking it."""
    deadline = time.monotonic() + within
    while worker is not None and not worker.started and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return worker is not None and bool(worker.started)


async def test_a_hung_up_clients_body_is_dropped_before_its_decode_begins(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="embedserve.api.bodies")
    metrics = Metrics.create(process=False)
    decoder = BodyDecoder(workers=1, spec=LIMITS, metrics=metrics)
    try:
        # The worker is spawned for this body (about a second); the hang-up is seen at once, before it is up.
        with pytest.raises(errors.ClientDisconnectedError):
            await decoder.decode(_request(SLOW_BODY, hang_up=True))
        assert "dropped before its decode began" in caplog.text
        assert "killed" not in caplog.text  # it never ran, so there was nothing to kill
        assert _abandoned(metrics) == {"skipped": 1, "killed": 0}
        body, texts = await decoder.decode(_request(QUICK_BODY, hang_up=False))
        assert texts == TEXTS and body.encoding_format == "float"
        assert "killed" not in caplog.text and "died" not in caplog.text  # the same worker, kept
    finally:
        decoder.close()


async def test_a_killed_decodes_worker_is_replaced_before_the_slots_next_body(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, logger="embedserve.api.bodies")
    monkeypatch.setattr(bodies, "KILL_AFTER_S", 0.0)  # a decode running when its client hangs up is killed at once
    metrics = Metrics.create(process=False)
    decoder = BodyDecoder(workers=1, spec=LIMITS, metrics=metrics)
    try:
        assert (await decoder.decode(_request(QUICK_BODY, hang_up=False)))[1] == TEXTS  # the worker is up
        first = decoder._idle[0]
        with pytest.raises(errors.ClientDisconnectedError):  # hangs up 0.5 s into a decode of seconds
            await decoder.decode(_request(SLOWER_BODY, hang_up=True, after=0.5))
        assert "killed a body decode" in caplog.text
        assert _abandoned(metrics) == {"skipped": 0, "killed": 1}
        replacement = decoder._idle[0]
        assert replacement is not None and replacement is not first
        # It gets up with no body asking for it (before, the slot's next body spawned it and waited ~0.9 s).
        assert await _up(replacement), "no worker was started in the killed one's place"
        body, texts = await decoder.decode(_request(QUICK_BODY, hang_up=False))
        assert texts == TEXTS and body.encoding_format == "float"
        assert decoder._idle[0] is replacement  # the one already up decoded it: no new process on its path
        assert _abandoned(metrics) == {"skipped": 0, "killed": 1}
    finally:
        decoder.close()


async def test_close_kills_a_replacement_worker_still_starting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bodies, "KILL_AFTER_S", 0.0)
    decoder = BodyDecoder(workers=1, spec=LIMITS)
    try:
        assert (await decoder.decode(_request(QUICK_BODY, hang_up=False)))[1] == TEXTS
        with pytest.raises(errors.ClientDisconnectedError):
            await decoder.decode(_request(SLOWER_BODY, hang_up=True, after=0.5))
        replacement = decoder._idle[0]
        assert replacement is not None and not replacement.started  # spawned milliseconds ago: ~0.9 s from up
    finally:
        decoder.close()
    # Killed, not left to finish its start: it never takes a job (its first, the pid, fails with the pool).
    with pytest.raises(BrokenProcessPool):
        await asyncio.wait_for(asyncio.wrap_future(replacement._pid), timeout=30)
    assert not replacement.started


async def test_a_worker_spawn_the_system_refuses_is_a_503_and_the_slot_works_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    decoder = BodyDecoder(workers=1, spec=LIMITS)
    real = StoppableWorker

    def refused(**_: Any) -> Any:
        raise OSError(24, "Too many open files")

    try:
        monkeypatch.setattr(bodies, "StoppableWorker", refused)
        for _ in range(2):
            with pytest.raises(errors.ServiceUnavailableError):
                await decoder.decode(_request(QUICK_BODY, hang_up=False))
        monkeypatch.setattr(bodies, "StoppableWorker", real)
        assert (await decoder.decode(_request(QUICK_BODY, hang_up=False)))[1] == TEXTS
    finally:
        decoder.close()


def test_a_worker_whose_server_is_gone_before_it_is_up_leaves() -> None:
    """The server's pid is handed to the worker at spawn: one that died during the worker's start-up (so the worker
    is re-parented before it could look) is still noticed, and the worker exits instead of living on."""
    gone = max(os.getpid(), os.getppid()) + 100_000  # no such process: as a server that died meanwhile
    orphan = StoppableWorker(initializer=bodies._init_worker, initargs=(LIMITS, gone))
    kept = StoppableWorker(initializer=bodies._init_worker, initargs=(LIMITS, os.getpid()))
    try:
        deadline = time.monotonic() + 60
        while orphan._process.is_alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not orphan._process.is_alive(), "the worker outlived its server"
        # The same start-up with its real server: up, taking jobs, and still there.
        assert kept.submit(os.getpid).result(timeout=60) == kept._process.pid
        assert kept._process.is_alive()
    finally:
        orphan.kill()
        kept.kill()
