"""The one launcher of real ``embedserve serve`` subprocesses on 127.0.0.1, for tests and benchmarks alike.

Tests import it as ``tests.serverproc``; a benchmark puts the repository root on ``sys.path`` first (it already puts
``src`` there). It lives with the tests rather than under ``benchmarks/`` because the tests are most of its users and
``tests`` is a package, so nothing has to load it by file path. A server that does not become ready in time is
killed before the error is raised, so no launcher leaves a process behind.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.paths import REPO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for an ``embedserve`` subprocess: this checkout's ``src`` and the repository root (for
    ``tests.*`` helpers) first on ``PYTHONPATH``, unbuffered output; ``extra`` on top."""
    inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    path = os.pathsep.join([str(REPO / "src"), str(REPO), *inherited])
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", **(extra or {})}


@dataclass
class ServerProcess:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return self.base_url

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self, *, timeout: float = 30) -> int:
        """SIGTERM, then the exit status (``subprocess.TimeoutExpired`` if it does not exit in ``timeout``)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def stop(self, *, timeout: float = 20) -> None:
        """SIGTERM, and SIGKILL if it has not exited within ``timeout``."""
        try:
            self.terminate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL (``kill -9``) if still running, and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def spawn_server(
    args: Sequence[str],
    *,
    log_path: Path,
    env: dict[str, str] | None = None,
    port: int | None = None,
    cwd: Path | None = None,
    append_log: bool = False,
) -> ServerProcess:
    """Start ``embedserve serve --host 127.0.0.1 --port PORT ARGS`` (a free port unless given), output to
    ``log_path``; it is not ready yet: see ``wait_ready``."""
    port = port or free_port()
    cmd = [sys.executable, "-m", "embedserve", "serve", "--host", "127.0.0.1", "--port", str(port), *args]
    with log_path.open("ab" if append_log else "wb") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=server_env(env), cwd=cwd)
    return ServerProcess(proc=proc, port=port, log_path=log_path)


def wait_ready(server: ServerProcess, *, timeout: float = 120, path: str = "/health", interval: float = 0.2) -> None:
    """Poll ``path`` until it answers 200; raise if the process exits first, kill it and raise on ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"server exited with {server.proc.returncode}:\n{server.log()}")
        try:
            if httpx.get(f"{server.base_url}{path}", timeout=max(1.0, interval * 10)).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(interval)
    server.kill()
    raise TimeoutError(f"server not ready after {timeout}s:\n{server.log()}")


def start_server(
    args: Sequence[str],
    *,
    log_path: Path,
    env: dict[str, str] | None = None,
    port: int | None = None,
    timeout: float = 120,
    ready_path: str = "/health",
    interval: float = 0.2,
    cwd: Path | None = None,
    append_log: bool = False,
) -> ServerProcess:
    """``spawn_server`` and ``wait_ready``: a ready server, or none left running (killed on any failure)."""
    server = spawn_server(args, log_path=log_path, env=env, port=port, cwd=cwd, append_log=append_log)
    try:
        wait_ready(server, timeout=timeout, path=ready_path, interval=interval)
    except BaseException:
        server.kill()
        raise
    return server


@contextmanager
def running_server(
    args: Sequence[str], *, log_path: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> Iterator[ServerProcess]:
    """A ready server for the ``with`` block, killed after it."""
    server = start_server(args, log_path=log_path, env=env, timeout=timeout)
    try:
        yield server
    finally:
        server.kill()
