"""``POST /v1/embeddings`` bodies are decoded off the event loop, with a bounded amount of big-body work at once.

A body of at most ``SMALL_BODY_BYTES`` is parsed and validated in a thread (milliseconds of GIL). A bigger one is
read only once one of ``workers`` slots is free, then parsed, validated and normalised in a worker process (where an
oversized input is refused) that hands back the input compact (texts, or one int64 array of ids): parsing 30 MB of
JSON holds the GIL for seconds and builds gigabytes of objects, which must happen neither on the event loop's
interpreter nor in the server's memory. Tokenisation then runs in a thread (HF tokenizers releases the GIL).
A client that hangs up meanwhile frees its worker: see ``KILL_AFTER_S``; a worker killed (or dead) is replaced at
once, so the slot's next body finds a process already up.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.requests import ClientDisconnect, Request

from embedserve import errors
from embedserve.api.body_workers import StoppableWorker, stop_requested
from embedserve.api.protocol import EmbeddingRequest
from embedserve.metrics import AbandonHow, Metrics, observe_abandoned_decode
from embedserve.service import normalize_input

logger = logging.getLogger(__name__)

SMALL_BODY_BYTES = 64 * 1024
WORKER_NICENESS = 10
PARENT_CHECK_SECONDS = 0.5
# A hung-up client's decode that has run this long is ended by killing its worker (a new one is spawned in its place:
# 0.9 s of CPU). Most big bodies decode sooner and are left to finish (a 780 KB list of texts: 3 ms; a full
# 2,048 x 512 token-id request, 7 MB: 0.2-0.3 s); the worst 32 MB ones take seconds, in single C calls (orjson,
# pydantic) that no flag could interrupt. So a kill is spent only where it frees a worker sooner than waiting would.
KILL_AFTER_S = 1.0
# A worker not up this long after it was spawned (normally ~0.9 s) is taken for hung, when a hung-up client waits on it.
START_LIMIT_S = 15.0
_JSON_INVALID = [{"type": "json_invalid", "loc": ("body",), "msg": "JSON decode error"}]


def _loads(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:  # the standard library keeps lone surrogates, which the service then names in its 400
        return json.loads(body)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        raise RequestValidationError(_JSON_INVALID) from None


def parse_request(body: bytes) -> EmbeddingRequest:
    """JSON, then the wire model; raises ``RequestValidationError`` as FastAPI's own parsing would."""
    data = _loads(body)
    try:
        return EmbeddingRequest.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False, include_context=False)) from None


# --- the worker process side -------------------------------------------------------------------------------------
_LIMITS: dict[str, InputLimits] = {}


def _init_worker(limits: InputLimits, server: int) -> None:
    """``server``: the pid of the server that spawned this worker, passed in rather than read here, since a server
    killed during the worker's second of imports would leave it re-parented already (``getppid`` then names init)."""
    # Below the server's priority: on a busy host the event loop (health checks, small requests) runs first.
    os.nice(WORKER_NICENESS)
    _LIMITS["limits"] = limits
    threading.Thread(target=_exit_with_parent, args=(server,), name="parent-watch", daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    """A server killed with SIGKILL cannot stop its pool: its workers (~100 MiB each) would live on as orphans,
    one pair per crash. So a worker leaves once its parent is gone (it is re-parented, and getppid changes)."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_SECONDS)
    os._exit(0)


def _decode_in_worker(body: bytes) -> tuple[str, Any]:
    """("ok", (fields, input)) with the input normalised and compact (texts, or int64 ids and their lengths),
    ("invalid", pydantic errors), ("error", (class name, message)) or ("stopped", None) for a body nobody waits for
    any more; never a multi-million-item list."""
    from embedserve.engine.memory import release_free_memory

    if stop_requested():  # its client hung up before the worker got to it
        return "stopped", None
    limits = _LIMITS["limits"]
    try:
        request = parse_request(body)
        del body
        truncate = limits.auto_truncate if request.truncate is None else request.truncate
        items = normalize_input(
            request.input, max_inputs=limits.max_inputs, max_chars=limits.max_chars, truncate=truncate
        )
        fields = request.model_dump(exclude={"input"})
        del request
        if items and isinstance(items[0], str):
            return "ok", (fields, ("texts", items))
        lengths = np.array([len(ids) for ids in items], dtype=np.int64)
        flat = np.fromiter((t for ids in items for t in ids), dtype=np.int64, count=int(lengths.sum()))
        return "ok", (fields, ("ids", flat, lengths))
    except RequestValidationError as exc:
        return "invalid", list(exc.errors())
    except errors.EmbedServeError as exc:
        return "error", (type(exc).__name__, exc.message, exc.param)
    finally:
        release_free_memory()


# --- the server side ---------------------------------------------------------------------------------------------
def _rebuild(result: tuple[str, Any]) -> tuple[EmbeddingRequest, list[str] | list[list[int]]]:
    kind, payload = result
    if kind == "invalid":
        raise RequestValidationError(payload)
    if kind == "error":
        name, message, param = payload
        cls = getattr(errors, name, errors.InvalidInputError)
        raise cls(message, param=param)
    fields, compact = payload
    if compact[0] == "texts":
        return EmbeddingRequest(input="", **fields), compact[1]
    _, flat, lengths = compact
    ends = np.cumsum(lengths)
    # One short C call per input (each at most max_chars ids), so other threads and the loop get the GIL between.
    id_lists: list[list[int]] = [flat[end - n : end].tolist() for end, n in zip(ends, lengths, strict=True)]
    return EmbeddingRequest(input="", **fields), id_lists


async def _body(request: Request) -> bytes:
    try:
        return await request.body()
    except ClientDisconnect:  # it hung up while its body was waiting to be read: nothing to do for it
        raise errors.ClientDisconnectedError("The client closed the connection before its body was read.") from None


async def wait_disconnect(request: Request) -> None:
    """Return once the client has hung up; only for a request whose body has been read (the next message the server
    sends is then the disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def done_first(job: asyncio.Future[Any], request: Request) -> bool:
    """Wait for ``job`` or the client's hang-up, whichever comes first: True if the job did."""
    watcher = asyncio.ensure_future(wait_disconnect(request))
    try:
        await asyncio.wait({job, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    return job.done()


@dataclass(frozen=True, slots=True)
class InputLimits:
    """What a worker needs to judge an input without the model (picklable)."""

    max_inputs: int
    max_chars: int
    auto_truncate: bool


class BodyDecoder:
    def __init__(self, *, workers: int, spec: InputLimits | None, metrics: Metrics | None = None) -> None:
        self.workers = workers
        self._spec = spec
        self._metrics = metrics
        self._slots = asyncio.Semaphore(workers)
        # One per slot: spawned on its first body, and again as soon as it is killed or dies.
        self._idle: list[StoppableWorker | None] = [None] * workers
        self._closed = False

    def close(self) -> None:
        self._closed = True
        for worker in self._idle:
            if worker is None:
                continue
            if worker.started:
                worker.close()
            else:  # a replacement still starting: it holds no job, and would spend a second of CPU getting up
                worker.kill()
        self._idle = [None] * len(self._idle)

    async def decode(self, request: Request) -> tuple[EmbeddingRequest, list[str] | list[list[int]] | None]:
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) <= SMALL_BODY_BYTES:
            return await asyncio.to_thread(parse_request, await _body(request)), None
        async with self._slots:  # waiting here holds a connection, not a body
            body = await _body(request)
            if len(body) <= SMALL_BODY_BYTES or self._spec is None or self.workers == 0:
                return await asyncio.to_thread(parse_request, body), None
            result = await self._in_worker(body, client=request)
            del body
        request_model, decoded = await asyncio.to_thread(_rebuild, result)
        return request_model, decoded

    async def decode_bytes(self, body: bytes) -> tuple[EmbeddingRequest, list[str] | list[list[int]] | None]:
        """A body already in memory (a batch line's), decoded as ``decode`` would: big ones in a worker process."""
        if len(body) <= SMALL_BODY_BYTES or self._spec is None or self.workers == 0:
            return await asyncio.to_thread(parse_request, body), None
        async with self._slots:
            result = await self._in_worker(body)
        return await asyncio.to_thread(_rebuild, result)

    async def _in_worker(self, body: bytes, *, client: Request | None = None) -> tuple[str, Any]:
        """Decode in the slot's worker (the caller holds a slot, so one is idle). A worker that died or was killed is
        replaced before the slot is handed on (by then the old one is dead): the new one starts in the background,
        and the slot's next body waits only for what is left of its start."""
        worker: StoppableWorker | None = None
        replace = True
        try:
            worker = self._idle.pop() or self._new_worker()
            return await self._run(worker, body, client=client)
        except BrokenProcessPool:
            logger.warning("a body-decoding worker died; starting a new one")
            assert worker is not None
            worker.close()
            raise _unavailable() from None
        except asyncio.CancelledError:
            replace = False  # the server is shutting down: no new process for it
            raise
        finally:
            self._idle.append(self._next_for_slot(worker, replace=replace))  # the slot always gets its place back

    def _next_for_slot(self, worker: StoppableWorker | None, *, replace: bool) -> StoppableWorker | None:
        """What the slot keeps after a body: its worker if usable, else (unless shutting down) a new one starting,
        else None (the slot's next body spawns one)."""
        if worker is None:
            return None
        if self._closed:
            worker.close()
            return None
        if worker.usable:
            return worker
        if not replace:
            return None
        try:
            return self._new_worker()
        except errors.ServiceUnavailableError:
            return None

    def _new_worker(self) -> StoppableWorker:
        """A worker for a slot, its process spawned now (milliseconds here; its start-up runs on). A spawn the system
        refuses (no processes or file descriptors left) is a 503 for this body, not a broken slot."""
        assert self._spec is not None
        try:
            return StoppableWorker(initializer=_init_worker, initargs=(self._spec, os.getpid()))
        except Exception:
            logger.exception("could not start a body-decoding worker")
            raise _unavailable() from None

    async def _run(self, worker: StoppableWorker, body: bytes, *, client: Request | None) -> tuple[str, Any]:
        future = worker.submit(_decode_in_worker, body)
        job = asyncio.wrap_future(future)
        started = time.monotonic()
        try:
            if client is None or await done_first(job, client):
                return await job
            how = await _abandon(worker, future, job, started=started)
            if how is not None and self._metrics is not None:
                observe_abandoned_decode(self._metrics, how=how)
        except asyncio.CancelledError:  # the server gave up on it (its shutdown timeout ran out)
            worker.stop(future)
            if not future.done():
                worker.kill()
                job.cancel()  # its BrokenProcessPool is nobody's to read
            raise
        raise errors.ClientDisconnectedError("The client closed the connection while its body was being decoded.")


def _unavailable() -> errors.ServiceUnavailableError:
    return errors.ServiceUnavailableError(
        "The server could not decode this request body right now; retry.", headers={"Retry-After": "1"}
    )


async def _abandon(
    worker: StoppableWorker, future: Future[tuple[str, Any]], job: asyncio.Future[tuple[str, Any]], *, started: float
) -> AbandonHow | None:
    """The client hung up: a decode not begun is skipped, one running is left until ``KILL_AFTER_S`` from when it
    could begin (submitted, and its worker up) to end, then killed; a worker not up within ``START_LIMIT_S`` is
    killed too. Returns once the worker is free or dead, so the slot is never handed on while it is busy: how the
    decode was given up, or None if it ended by itself (it finished, or its worker died)."""
    worker.stop(future)
    give_up = time.monotonic() + START_LIMIT_S
    while not job.done() and not worker.started and time.monotonic() < give_up:  # still starting: it will skip it
        await asyncio.wait({job}, timeout=0.05)
    if not job.done() and worker.started:
        began = max(started, min(worker.up_at, time.monotonic()))  # up_at lands just after started turns True
        await asyncio.wait({job}, timeout=max(0.0, began + KILL_AFTER_S - time.monotonic()))
    if not job.done():
        worker.kill()
        job.cancel()  # its BrokenProcessPool is nobody's to read
        seconds = time.monotonic() - started
        logger.info("killed a body decode %.1f s in: its client hung up; a new worker is starting", seconds)
        return "killed"
    # Cancelled in the pool before its worker took it, or skipped by the worker.
    if job.cancelled() or (job.exception() is None and job.result()[0] == "stopped"):
        logger.debug("a body whose client hung up was dropped before its decode began")
        return "skipped"
    if isinstance(job.exception(), BrokenProcessPool):
        worker.close()
    return None
