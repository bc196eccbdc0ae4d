"""Real server processes for the gateway tests (``embedserve serve --backend fake`` on the bge tokenizer, so token
counts are exact) and the ``embedserve`` CLI as a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.gateway_stub_engine import REFERENCE_DIR

REPO = Path(__file__).resolve().parents[3]


def _env(extra: dict[str, str]) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}", "PYTHONUNBUFFERED": "1", **extra}


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "embedserve", *args], cwd=REPO, env=_env(env or {}), capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip


def create_key(store_args: Sequence[str], **options: int) -> dict[str, Any]:
    flags = [f"--{name}={value}" for name, value in options.items()]
    out = cli("keys", "create", "--name", "proc-test", "--format", "json", *flags, *store_args)
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout)
    return result


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill9()


def start_server(*, port: int, env: dict[str, str], log_path: Path) -> Server:
    cmd = [sys.executable, "-m", "embedserve", "serve", "--model", str(REFERENCE_DIR), "--backend", "fake",
           "--served-model-name", "BAAI/bge-large-en-v1.5", "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    with log_path.open("ab") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(cmd, cwd=REPO, env=_env(env), stdout=log, stderr=subprocess.STDOUT)
    server = Server(proc=proc, port=port, log_path=log_path)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{server.log()}")
        try:
            if httpx.get(f"{server.url}/health", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.kill9()
    raise TimeoutError(f"server not ready:\n{server.log()}")


@contextmanager
def servers(count: int, *, env: dict[str, str], tmp_path: Path) -> Iterator[list[Server]]:
    from tests.serverproc import free_port

    started: list[Server] = []
    try:
        for i in range(count):
            started.append(start_server(port=free_port(), env=env, log_path=tmp_path / f"server{i}.log"))
        yield started
    finally:
        for server in started:
            server.stop()
