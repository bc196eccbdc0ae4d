"""``embedserve serve --api-processes N``: one engine process and N API processes, supervised from here.

The engine starts first (the model loads once, there); then this process binds the listening socket once and the API
processes share it (pre-fork, as uvicorn's and gunicorn's workers do), the first one alone so that it creates the
store's schema and first keys before its siblings start. A dead API process is replaced (the engine does not notice;
the shared socket keeps its pending connections); a dead engine is restarted while the API processes answer 503.
With ``--metrics-port`` this process binds that port too, before the model loads, and the engine process serves it
(``engine_process.OpenMetrics``); the port stays bound while an engine is replaced. SIGTERM or SIGINT drains in
order: the API processes finish their requests (``--shutdown-timeout``), then the engine stops, and this process
exits 0. The children sit in their own process group (a terminal's Ctrl-C reaches only this process, which then drains
them) and each leaves if this process dies, the last one out removing the server's private directory (``rundir.py``).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from typing import Any

from embedserve.api_process import run_api_process
from embedserve.engine.engine_process import run_engine_process
from embedserve.engine.model_info import ModelInfo
from embedserve.listening import listen
from embedserve.logs import configure_logging
from embedserve.metrics import SHARED_DIR_ENV
from embedserve.rundir import RunDir
from embedserve.server import _banner
from embedserve.settings import Settings

logger = logging.getLogger(__name__)

STOP_GRACE_S = 15.0  # past --shutdown-timeout, before a child that has not exited is killed
RESTART_BACKOFF_S = (1.0, 30.0)
API_MIN_LIFE_S = 10.0


def run_multiprocess(settings: Settings) -> int:
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    supervisor = Supervisor(settings)
    try:
        return supervisor.run()
    finally:
        supervisor.cleanup()


def _own_group(target: Any, **kwargs: Any) -> None:
    os.setpgrp()
    target(**kwargs)


class Supervisor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._mp = multiprocessing.get_context("spawn")
        self._run_dir = RunDir.create()  # removed by cleanup(), or by the last child out if this process is killed
        self.endpoint = f"ipc://{self._run_dir.path / 'engine.sock'}"
        self._metrics_dir = self._run_dir.path / "metrics"  # the children's counters and histograms (metrics.py)
        self._metrics_dir.mkdir()
        self._env_before: str | None = None
        self._stopping = False
        self._engine: BaseProcess | None = None
        self._apis: list[BaseProcess] = []
        # each API process's "started" event (kept alive until the child has read it) and when it was started
        self._events: dict[str, tuple[Any, float]] = {}
        self._model: tuple[ModelInfo, str] | None = None
        self._sock: socket.socket | None = None
        self._metrics_sock: socket.socket | None = None  # --metrics-port, served by the engine process
        self._spawned = 0

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        # Inherited by every child: prometheus_client reads it when a child imports it.
        self._env_before = os.environ.get(SHARED_DIR_ENV)
        os.environ[SHARED_DIR_ENV] = str(self._metrics_dir)
        if self.settings.metrics_port is not None:
            try:
                self._metrics_sock = listen(self.settings.host, self.settings.metrics_port, inheritable=True)
            except OSError as exc:
                where = f"{self.settings.host}:{self.settings.metrics_port}"
                print(f"embedserve: cannot listen on {where} (--metrics-port): {exc}", file=sys.stderr)
                return 2
        failure = self._start_engine()
        if failure is not None and self._stopping:
            return self._drain(code=0)  # told to stop while the model loaded
        if failure is not None:
            print(f"embedserve: could not start the engine: {failure}", file=sys.stderr, flush=True)
            return 2
        try:
            self._sock = listen(self.settings.host, self.settings.port, inheritable=True)  # for every API process
        except OSError as exc:
            print(f"embedserve: cannot listen on {self.settings.host}:{self.settings.port}: {exc}", file=sys.stderr)
            return self._drain(code=2)
        first = self._start_api()
        if not first:
            print("embedserve: the first API process did not start (see its log above)", file=sys.stderr)
            return self._drain(code=2)
        for _ in range(1, self.settings.api_processes):
            self._start_api(wait_started=False)
        self._announce()
        self._supervise()
        return self._drain(code=0)

    def _on_signal(self, signum: int, _frame: object) -> None:
        logger.info("signal %d: draining the API processes, then the engine", signum)
        self._stopping = True

    def _announce(self) -> None:
        assert self._model is not None and self._sock is not None
        port = self._sock.getsockname()[1]
        settings = self.settings
        if self._metrics_sock is not None:  # the port bound, should --metrics-port be 0
            settings = settings.model_copy(update={"metrics_port": self._metrics_sock.getsockname()[1]})
        banner = _banner(settings, host=self.settings.host, port=port, info=self._model[0])
        processes = f"\n  processes   {self.settings.api_processes} API processes + 1 engine process"
        print(banner + processes, file=sys.stderr, flush=True)

    def _start_engine(self) -> str | None:
        """Start the engine process and wait until it is ready; returns why not, or None."""
        receiver, sender = self._mp.Pipe(duplex=False)
        kwargs = {
            "settings": self.settings.engine,
            "parent": os.getpid(),
            "endpoint": self.endpoint,
            "run_dir": str(self._run_dir.path),
            "conn": sender,
            "shutdown_timeout": self.settings.shutdown_timeout,
            "log_level": self.settings.log_level,
            "log_fmt": self.settings.log_format,
            "metrics_sock": self._metrics_sock,
        }
        process = self._mp.Process(
            target=_own_group, args=(run_engine_process,), kwargs=kwargs, name="embedserve-engine"
        )
        process.start()
        sender.close()
        self._engine = process
        while not receiver.poll(0.2):
            if not process.is_alive():
                return f"the engine process exited with code {process.exitcode}"
            if self._stopping:
                receiver.close()
                return "shutting down"
        try:
            message = receiver.recv()
        except EOFError:
            process.join(5)
            return f"the engine process exited with code {process.exitcode}"
        finally:
            receiver.close()
        if message[0] != "ready":
            process.join(30)
            return str(message[1])
        self._model = (message[1], message[2])
        logger.info("engine process %d ready on %s", process.pid, self.endpoint)
        return None

    def _start_api(self, *, wait_started: bool = True) -> bool:
        assert self._model is not None and self._sock is not None
        started = self._mp.Event()
        kwargs = {
            "target": run_api_process,
            "settings": self.settings,
            "parent": os.getpid(),
            "sock": self._sock,
            "endpoint": self.endpoint,
            "run_dir": str(self._run_dir.path),
            "info": self._model[0],
            "tokenizer_path": self._model[1],
            "started": started,
        }
        self._spawned += 1
        process = self._mp.Process(target=_own_group, kwargs=kwargs, name=f"embedserve-api-{self._spawned}")
        process.start()
        self._apis.append(process)
        self._events[process.name] = (started, time.monotonic())
        logger.info("API process %s started as pid %d", process.name, process.pid)
        while wait_started and not started.wait(0.2):
            if not process.is_alive():
                return False
        return True

    def _supervise(self) -> None:
        backoff = RESTART_BACKOFF_S[0]
        while not self._stopping:
            assert self._engine is not None
            wait([p.sentinel for p in [self._engine, *self._apis]], timeout=0.5)
            if self._stopping:
                break
            if not self._engine.is_alive():
                logger.error("the engine process exited with code %s; restarting it", self._engine.exitcode)
                failure = self._start_engine()
                if failure is not None and self._stopping:
                    break
                if failure is not None:
                    logger.error("the engine did not restart (%s); retrying in %.0f s", failure, backoff)
                    time.sleep(backoff)
                    backoff = min(backoff * 2, RESTART_BACKOFF_S[1])
                    continue
                backoff = RESTART_BACKOFF_S[0]
            for process in [p for p in self._apis if not p.is_alive()]:
                logger.error("API process %s exited with code %s; starting another", process.name, process.exitcode)
                self._apis.remove(process)
                _started, at = self._events.pop(process.name)
                if time.monotonic() - at < API_MIN_LIFE_S:
                    time.sleep(RESTART_BACKOFF_S[0])  # one that cannot start must not spin
                self._start_api(wait_started=False)

    def _drain(self, *, code: int) -> int:
        """API processes first (they finish their requests on the engine), then the engine."""
        if self._sock is not None:
            self._sock.close()  # the children hold their own copies until they stop listening
        limit = self.settings.shutdown_timeout + STOP_GRACE_S
        clean = _stop_all(self._apis, limit=limit)
        if self._engine is not None:
            clean = _stop_all([self._engine], limit=limit) and clean
        return code if clean or code else 1

    def cleanup(self) -> None:
        if self._metrics_sock is not None:
            self._metrics_sock.close()
        if self._env_before is None:
            os.environ.pop(SHARED_DIR_ENV, None)
        else:
            os.environ[SHARED_DIR_ENV] = self._env_before
        self._run_dir.remove()


def _stop_all(processes: list[BaseProcess], *, limit: float) -> bool:
    """SIGTERM each, wait up to ``limit`` seconds for all, kill what is left; True if all stopped cleanly."""
    for process in processes:
        if process.is_alive() and process.pid is not None:
            os.kill(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + limit
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            logger.error("%s did not stop within %.0f s; killing it", process.name, limit)
            process.kill()
            process.join(5)
    # -SIGTERM: one still starting when told to stop (no handler yet, so nothing accepted): as clean as 0
    return all(p.exitcode in (0, -signal.SIGTERM) for p in processes)
