"""The engine process of ``--api-processes N``: the one ``Engine`` (scheduler, priority queue, backend) answering the
API processes over a ZeroMQ ROUTER socket (wire format: ``engine/ipc.py``).

It tells its parent through a pipe when it is ready (the model facts and the tokenizer file the API processes need),
or why it could not start. SIGINT is ignored (a terminal's Ctrl-C reaches every process; the parent drains the API
processes first), SIGTERM stops it after the work in hand, and it leaves if its parent dies. With ``--metrics-port``
it also serves the open metrics listener on the socket its parent bound (``OpenMetrics``): there is always exactly
one engine process, and it is the one that knows the queue.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

from embedserve.engine import ipc
from embedserve.engine.engine import Engine
from embedserve.engine.scheduler import EmbedTiming
from embedserve.errors import EmbedServeError, EngineError
from embedserve.logs import configure_logging
from embedserve.metrics import Metrics, batch_observer, set_model_info, track_queue
from embedserve.metrics_port import MetricsServer, serve_metrics_socket
from embedserve.rundir import RunDir
from embedserve.settings import EngineSettings, LogFormat

logger = logging.getLogger(__name__)

PARENT_CHECK_SECONDS = 0.5
ORPHAN_GRACE_S = 15.0  # past the shutdown timeout, before an orphan that has not stopped exits at once


def run_engine_process(
    settings: EngineSettings,
    *,
    parent: int,
    endpoint: str,
    run_dir: str,
    conn: Connection,
    shutdown_timeout: float,
    log_level: str,
    log_fmt: LogFormat,
    metrics_sock: socket.socket | None = None,
) -> None:
    """The process's target (spawned): serve until SIGTERM (and ``metrics_sock``, if given, as ``--metrics-port``)."""
    held = RunDir(Path(run_dir))
    held.hold()
    try:
        configure_logging(level=log_level, fmt=log_fmt)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        watch_parent(parent, grace=shutdown_timeout + ORPHAN_GRACE_S, before_exit=held.leave)
        # Its batch histograms go to the directory the API processes' /metrics read (metrics.py, shared mode).
        metrics = Metrics.create(process=metrics_sock is not None, shared=True)
        engine = Engine(settings, on_batch=batch_observer(metrics))
        exposed = None if metrics_sock is None else OpenMetrics(metrics, metrics_sock)
        asyncio.run(
            serve_engine(engine, endpoint=endpoint, conn=conn, shutdown_timeout=shutdown_timeout, open_metrics=exposed)
        )
    finally:
        held.leave()  # removes the server's directory if this is the last process out (the parent was killed)


def watch_parent(parent: int, *, grace: float, before_exit: Callable[[], object] | None = None) -> None:
    """A parent killed with SIGKILL cannot stop its children: this one then stops itself gracefully (SIGTERM), and
    for good if that has not ended it within ``grace`` seconds (calling ``before_exit`` first). ``parent`` is the pid
    the parent passed down: read here, getppid could already name the process that adopted this one."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_SECONDS)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace)
        if before_exit is not None:
            before_exit()
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


@dataclass(frozen=True, slots=True)
class OpenMetrics:
    """``--metrics-port`` under ``--api-processes``: the engine process's shared registry and the listening socket."""

    metrics: Metrics
    sock: socket.socket

    def serve(self, engine: Engine) -> MetricsServer:
        """What an API process's /metrics renders (every process's counters and histograms, summed from the files),
        with this process's own model info, queue gauges (read from the engine itself) and process_* metrics."""
        info = engine.info
        set_model_info(
            self.metrics, model=info.name, backend=info.backend, dtype=info.dtype, device=info.device, dim=info.dim
        )
        track_queue(self.metrics, depth=lambda: engine.queue_depth, tokens=lambda: engine.queued_tokens)
        return serve_metrics_socket(self.metrics, self.sock)


async def serve_engine(
    engine: Engine,
    *,
    endpoint: str,
    conn: Connection,
    shutdown_timeout: float,
    open_metrics: OpenMetrics | None = None,
) -> None:
    """Start ``engine``, say so on ``conn``, answer on ``endpoint`` (and serve ``open_metrics``) until SIGTERM, then
    finish the work in hand."""
    try:
        await engine.start()
    except EmbedServeError as exc:
        conn.send(("error", exc.message))
        return
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    context = zmq.asyncio.Context()
    sock = context.socket(zmq.ROUTER)
    for option in (zmq.SNDHWM, zmq.RCVHWM, zmq.LINGER):
        sock.setsockopt(option, 0)  # never drop a reply at a high-water mark
    sock.bind(endpoint)
    listener = None if open_metrics is None else open_metrics.serve(engine)
    conn.send(("ready", engine.info, str(engine.tokenizer_path)))
    server = EngineServer(engine, sock)
    receiving = asyncio.create_task(server.receive())
    await stopping.wait()
    receiving.cancel()
    await server.drain(timeout=shutdown_timeout)
    await engine.stop(timeout=shutdown_timeout)
    if listener is not None:
        listener.close()
    sock.close(linger=0)
    context.term()
    logger.info("engine process stopped")


class EngineServer:
    """Runs each API process's requests on the engine; a request's cancellation cancels its queued inputs."""

    def __init__(self, engine: Engine, sock: zmq.asyncio.Socket) -> None:
        self._engine = engine
        self._sock = sock
        self._tasks: dict[tuple[bytes, int], asyncio.Task[None]] = {}

    async def receive(self) -> None:
        while True:
            frames = await self._sock.recv_multipart(copy=False)
            identity, rest = frames[0].bytes, [f.buffer for f in frames[1:]]
            request = ipc.parse_request(rest)
            key = (identity, request.seq)
            if request.kind is ipc.Kind.CANCEL:
                task = self._tasks.get(key)
                if task is not None:
                    task.cancel()
                continue
            work = self._embed(identity, request) if request.kind is ipc.Kind.EMBED else self._ready(identity, request)
            task = asyncio.create_task(work)
            self._tasks[key] = task
            task.add_done_callback(functools.partial(self._forget, key))

    def _forget(self, key: tuple[bytes, int], _task: asyncio.Task[None]) -> None:
        self._tasks.pop(key, None)

    async def drain(self, *, timeout: float) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks.values()), timeout=timeout)

    def _queue(self) -> dict[str, Any]:
        return {"depth": self._engine.queue_depth, "tokens": self._engine.queued_tokens}

    async def _embed(self, identity: bytes, request: ipc.Request) -> None:
        timing = EmbedTiming()
        try:
            vectors = await self._engine.embed(request.encodings, priority=request.priority, timing=timing)
            frames = ipc.vectors_reply(request.seq, vectors, timing=timing, **self._queue())
        except EmbedServeError as exc:
            frames = ipc.error_reply(request.seq, exc, **self._queue())
        except Exception:
            logger.exception("embedding %d inputs failed", len(request.encodings))
            failed = EngineError("Inference failed on the server; it has been logged.")
            frames = ipc.error_reply(request.seq, failed, **self._queue())
        await self._sock.send_multipart([identity, *frames], copy=False)

    async def _ready(self, identity: bytes, request: ipc.Request) -> None:
        ok = await self._engine.ready()
        frames = ipc.reply(ipc.Status.READY, request.seq, b"\x01" if ok else b"\x00", **self._queue())
        await self._sock.send_multipart([identity, *frames], copy=False)
