"""What ``embedserve serve`` prints at start-up: the --no-auth warning once, and a banner that says how /metrics is
reached under the auth mode in force."""

from __future__ import annotations

from pathlib import Path

from tests.paths import REFERENCE_DIR
from tests.serverproc import running_server

FAKE = ["--model", str(REFERENCE_DIR), "--backend", "fake"]


def test_no_auth_warns_once_and_the_banner_says_metrics_are_open(tmp_path: Path) -> None:
    with running_server([*FAKE, "--no-auth"], log_path=tmp_path / "server.log") as server:
        log = server.log()
    assert log.count("AUTHENTICATION IS OFF") == 1, log
    assert "/metrics (open: --no-auth)" in log and "(admin key)" not in log


def test_with_auth_the_banner_says_metrics_need_the_admin_key(tmp_path: Path) -> None:
    args = [*FAKE, "--admin-key", "es-admin-banner-test", "--data-dir", str(tmp_path)]
    with running_server(args, log_path=tmp_path / "server.log") as server:
        log = server.log()
    assert "/metrics (admin key)" in log and "AUTHENTICATION IS OFF" not in log
