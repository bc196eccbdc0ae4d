"""A real ``embedserve serve`` subprocess on 127.0.0.1 for tests that need a live server (SDKs, signals, crashes)."""

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


@dataclass
class ServerProcess:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self, *, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def spawn_server(
    args: Sequence[str], *, log_path: Path, env: dict[str, str] | None = None, port: int | None = None
) -> ServerProcess:
    port = port or free_port()
    full_env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "PYTHONUNBUFFERED": "1", **(env or {})}
    cmd = [sys.executable, "-m", "embedserve", "serve", "--host", "127.0.0.1", "--port", str(port), *args]
    with log_path.open("wb") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=full_env)
    return ServerProcess(proc=proc, port=port, log_path=log_path)


def wait_ready(server: ServerProcess, *, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"server exited with {server.proc.returncode}:\n{server.log()}")
        try:
            if httpx.get(f"{server.base_url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.kill()
    raise TimeoutError(f"server not ready after {timeout}s:\n{server.log()}")


@contextmanager
def running_server(
    args: Sequence[str], *, log_path: Path, env: dict[str, str] | None = None
) -> Iterator[ServerProcess]:
    server = spawn_server(args, log_path=log_path, env=env)
    try:
        wait_ready(server)
        yield server
    finally:
        server.kill()
