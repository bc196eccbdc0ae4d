"""One API process of ``--api-processes N``: the whole app (HTTP parsing, validation, keys and credits,
tokenisation, response encoding) on its own event loop, its engine a ``RemoteEngine``, accepting on the listening
socket its parent bound and shares with its sibling processes.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import threading
from multiprocessing.synchronize import Event
from pathlib import Path

import uvicorn

from embedserve.engine.engine_process import ORPHAN_GRACE_S, watch_parent
from embedserve.engine.model_info import ModelInfo
from embedserve.logs import configure_logging
from embedserve.rundir import RunDir
from embedserve.server import uvicorn_config
from embedserve.settings import Settings

logger = logging.getLogger(__name__)


def run_api_process(
    settings: Settings,
    *,
    parent: int,
    sock: socket.socket,
    endpoint: str,
    run_dir: str,
    info: ModelInfo,
    tokenizer_path: str,
    started: Event,
) -> None:
    """The process's target (spawned): serve on ``sock`` until SIGTERM (or SIGINT), then exit 0."""
    from embedserve.api.app import create_app
    from embedserve.engine.remote import RemoteEngine
    from embedserve.metrics import Metrics

    held = RunDir(Path(run_dir))
    held.hold()
    try:
        configure_logging(level=settings.log_level, fmt=settings.log_format)
        watch_parent(parent, grace=settings.shutdown_timeout + ORPHAN_GRACE_S, before_exit=held.leave)
        engine = RemoteEngine(settings.engine, endpoint=endpoint, info=info, tokenizer_path=Path(tokenizer_path))
        app = create_app(settings, engine=engine, metrics=Metrics.create(shared=True))  # the engine's too
        server = uvicorn.Server(uvicorn_config(settings, app))
        # As in one process, uvicorn re-raises the SIGTERM it caught after its graceful shutdown, and this handler
        # lands it; one that arrives before uvicorn's own handlers are in place (still starting) is remembered.
        early = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: early.set())
        asyncio.run(_serve(server, sock, started, early))
    finally:
        held.leave()  # removes the server's directory if this is the last process out (the parent was killed)


async def _serve(server: uvicorn.Server, sock: socket.socket, started: Event, early: threading.Event) -> None:
    if early.is_set():
        return  # told to stop before serving anything
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not serving.done():
        await asyncio.sleep(0.05)
    if server.started:
        started.set()
        if early.is_set():
            server.should_exit = True  # told to stop while starting
    await serving
    if not server.started:
        raise SystemExit(3)  # the lifespan failed (its reason is logged): as uvicorn's own run() exits
