"""The processes that decode big bodies for api/bodies.py, each in a pool of its own, so that the one whose client
hung up can be stopped (a job not yet begun is skipped; one running ends with its process) without failing another
client's decode, as killing a worker of a shared pool would (the whole pool breaks)."""

from __future__ import annotations

import ctypes
import math
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

# --- the worker process side -------------------------------------------------------------------------------------
_STOP: list[ctypes.c_bool] = []  # in a worker: the flag its server sets when it gives up on the job


def _init(stop: ctypes.c_bool, initializer: Callable[..., None], initargs: tuple[Any, ...]) -> None:
    _STOP.append(stop)
    initializer(*initargs)


def stop_requested() -> bool:
    """In a worker: whether the server has given up on the job about to run (its client hung up meanwhile)."""
    return bool(_STOP) and bool(_STOP[0].value)


# --- the server side ---------------------------------------------------------------------------------------------
class StoppableWorker:
    """One process (spawned now, then kept) that runs one job at a time; its owner submits the next job only once the
    previous one is over."""

    def __init__(self, *, initializer: Callable[..., None], initargs: tuple[Any, ...]) -> None:
        context = multiprocessing.get_context("spawn")  # never fork a process holding torch's threads
        self._stop = context.RawValue(ctypes.c_bool, False)
        self._pool = ProcessPoolExecutor(
            max_workers=1, mp_context=context, initializer=_init, initargs=(self._stop, initializer, initargs)
        )
        self._pid = self._pool.submit(os.getpid)  # starts the process; done once it is up and taking jobs
        self.up_at = math.inf  # when it was (time.monotonic)
        self._pid.add_done_callback(self._came_up)
        # That submit spawned the pool's one process: kept so that it can be killed before it is up (no pid yet).
        self._process = next(iter(self._pool._processes.values()))
        self.usable = True

    def _came_up(self, pid: Future[int]) -> None:
        self.up_at = time.monotonic()

    @property
    def started(self) -> bool:
        """Whether the process is up: a job submitted before then has not begun."""
        pid = self._pid
        return pid.done() and not pid.cancelled() and pid.exception() is None

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        self._stop.value = False
        return self._pool.submit(fn, *args)

    def stop(self, job: Future[Any]) -> None:
        """Give up on ``job``: one that has not begun never will (its function asks ``stop_requested`` first)."""
        self._stop.value = True
        job.cancel()

    def kill(self) -> None:
        """End the process now, whatever it runs, or while it is still starting (SIGKILL: a C call cannot be
        interrupted otherwise)."""
        self._process.kill()
        self.close()

    def close(self) -> None:
        """The process leaves once its job is over (or skipped, if stopped); a killed one is reaped."""
        self.usable = False
        self._pool.shutdown(wait=False, cancel_futures=True)
