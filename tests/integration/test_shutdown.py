"""Graceful shutdown of a real server: SIGTERM mid-burst answers every accepted request, and exits 0."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.browser.conftest import minilm_dir
from tests.serverproc import spawn_server, wait_ready

BURST = 8
TEXTS = [
    f"Passage number {i} is about the long history of a small seaside town and its harbour." * 3 for i in range(16)
]


async def _embed(client: httpx.AsyncClient) -> httpx.Response:
    return await client.post("/v1/embeddings", json={"input": TEXTS, "input_type": "document"})


async def _burst_then_sigterm(
    base_url: str, pid: int
) -> tuple[list[httpx.Response | BaseException], BaseException | httpx.Response, int, float]:
    limits = httpx.Limits(max_connections=BURST + 4)
    async with httpx.AsyncClient(base_url=base_url, timeout=120, limits=limits) as client:
        tasks = [asyncio.create_task(_embed(client)) for _ in range(BURST)]
        # Once one answer is back every request of the burst has been read by the server: all are accepted.
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        sent_at = time.monotonic()
        os.kill(pid, signal.SIGTERM)
        pending = sum(not t.done() for t in tasks)
        await asyncio.sleep(0.3)
        late = await _late_request(base_url)
        results = await asyncio.gather(*tasks, return_exceptions=True)
    return list(results), late, pending, sent_at


async def _late_request(base_url: str) -> BaseException | httpx.Response:
    """A new connection after SIGTERM: the listener is closed, so it must be refused."""
    async with httpx.AsyncClient(base_url=base_url, timeout=5) as fresh:
        try:
            return await fresh.get("/health")
        except httpx.TransportError as exc:
            return exc


@dataclass(frozen=True)
class SigtermBurst:
    """What a burst with SIGTERM in its middle saw: each accepted request's outcome, a request sent 0.3 s after
    SIGTERM on a new connection, how many were still unanswered at SIGTERM, when it was sent, the exit status."""

    results: list[httpx.Response | BaseException]
    late: BaseException | httpx.Response
    pending: int
    sent_at: float
    code: int
    log: str


def sigterm_mid_burst(args: list[str], *, tmp_path: Path) -> SigtermBurst:
    """Start ``embedserve serve ARGS`` (data in ``tmp_path``), send ``BURST`` requests, SIGTERM it once the first is
    answered, and wait for it to exit (it is killed if it does not within 90 s)."""
    live = spawn_server([*args, "--data-dir", str(tmp_path)], log_path=tmp_path / "server.log")
    try:
        wait_ready(live)
        # A thread of its own: a session-scoped Playwright (browser tests) may own this thread's event loop.
        with ThreadPoolExecutor(1) as pool:
            burst = pool.submit(asyncio.run, _burst_then_sigterm(live.base_url, live.proc.pid))
            results, late, pending, sent_at = burst.result(timeout=180)
        code = live.proc.wait(timeout=90)
    finally:
        live.kill()
    return SigtermBurst(results, late, pending, sent_at, code, live.log())


def assert_every_accepted_request_answered(run: SigtermBurst) -> None:
    """Every request of the burst got its full answer, and the server exited 0 without a traceback."""
    assert run.pending > 0, "the burst finished before SIGTERM; the test proves nothing"
    failures = [r for r in run.results if not isinstance(r, httpx.Response) or r.status_code != 200]
    assert not failures, f"{len(failures)} of {BURST} accepted requests were not answered: {failures[:3]}"
    assert all(len(r.json()["data"]) == len(TEXTS) for r in run.results if isinstance(r, httpx.Response))
    assert run.code == 0, run.log[-3000:]
    assert "Traceback" not in run.log


def test_sigterm_during_a_burst_answers_every_accepted_request_and_exits_zero(tmp_path: Path) -> None:
    if importlib.util.find_spec("embedserve.engine.engine") is None:
        pytest.skip("the engine is not in this checkout yet (embedserve.engine.engine missing)")
    run = sigterm_mid_burst(["--model", minilm_dir(), "--no-auth", "--shutdown-timeout", "60"], tmp_path=tmp_path)
    assert_every_accepted_request_answered(run)
    assert isinstance(run.late, httpx.ConnectError), f"a new request was not refused after SIGTERM: {run.late!r}"
    assert time.monotonic() - run.sent_at < 90
