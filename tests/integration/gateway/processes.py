"""Real server processes for the gateway tests (``embedserve serve --backend fake`` on the bge tokenizer, so token
counts are exact) and the ``embedserve`` CLI as a subprocess.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.paths import REFERENCE_DIR, REPO
from tests.serverproc import ServerProcess, free_port, server_env
from tests.serverproc import start_server as launch


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "embedserve", *args], cwd=REPO, env=server_env(env), capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip


def create_key(store_args: Sequence[str], **options: int) -> dict[str, Any]:
    flags = [f"--{name}={value}" for name, value in options.items()]
    out = cli("keys", "create", "--name", "proc-test", "--format", "json", *flags, *store_args)
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout)
    return result


Server = ServerProcess

FAKE_BGE = ["--model", str(REFERENCE_DIR), "--backend", "fake", "--served-model-name", "BAAI/bge-large-en-v1.5"]


def start_server(*, port: int, env: dict[str, str], log_path: Path) -> Server:
    """A ready fake-backend server on ``port`` (its log appended to ``log_path``); killed if it does not start."""
    return launch(FAKE_BGE, port=port, env=env, log_path=log_path, cwd=REPO, append_log=True, timeout=90, interval=0.1)


@contextmanager
def servers(count: int, *, env: dict[str, str], tmp_path: Path) -> Iterator[list[Server]]:
    started: list[Server] = []
    try:
        for i in range(count):
            started.append(start_server(port=free_port(), env=env, log_path=tmp_path / f"server{i}.log"))
        yield started
    finally:
        for server in started:
            server.stop()
