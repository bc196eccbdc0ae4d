"""The private directory of an ``--api-processes`` server: removed by the last process out, never while another
process of the server (the parent above all) still runs, and a process killed outright does not keep it."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from embedserve.rundir import LOCK_FILE, RunDir


def _held(path: Path) -> RunDir:
    run_dir = RunDir(path)
    assert run_dir.hold()
    return run_dir


def test_the_last_process_to_leave_removes_the_directory(tmp_path: Path) -> None:
    path = tmp_path / "run"
    path.mkdir()
    (path / "engine.sock").touch()
    first, second, third = (_held(path) for _ in range(3))  # each its own open file: as separate processes
    assert not first.leave() and not second.leave()
    assert path.exists()
    assert third.leave()
    assert not path.exists()
    assert not RunDir(path).hold()  # a process still starting finds it gone


def test_a_child_leaving_while_the_parent_runs_removes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    parent = RunDir.create()
    assert parent.path.parent == tmp_path
    try:
        child = _held(parent.path)
        assert not child.leave()
        assert parent.path.exists()
    finally:
        parent.remove()
    assert not parent.path.exists()


def test_a_process_killed_outright_does_not_keep_the_directory(tmp_path: Path) -> None:
    path = tmp_path / "run"
    path.mkdir()
    holder = (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(path / LOCK_FILE)!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_SH)\n"
        "print('held', flush=True)\n"
        "time.sleep(60)\n"
    )
    with subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None and proc.stdout.readline() == "held\n"
            last = _held(path)
            blocked = _held(path)
            assert not blocked.leave()  # the other process holds it
            proc.kill()  # kill -9
            proc.wait(timeout=10)
            assert last.leave()
        finally:
            proc.kill()
    assert not path.exists()
