"""The one launcher (tests/serverproc.py) leaves no server behind: not ready in time, it is killed; exited, its log
is in the error."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.paths import REFERENCE_DIR
from tests.serverproc import spawn_server, start_server, wait_ready

FAKE = ["--model", str(REFERENCE_DIR), "--backend", "fake"]


def test_a_server_not_ready_in_time_is_killed(tmp_path: Path) -> None:
    server = spawn_server(FAKE, log_path=tmp_path / "server.log")
    with pytest.raises(TimeoutError, match="not ready after 0s"):
        wait_ready(server, timeout=0)
    assert server.proc.poll() is not None


def test_a_server_that_exits_at_start_raises_with_its_log(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="no-such-flag"):
        start_server([*FAKE, "--no-such-flag"], log_path=tmp_path / "server.log")
