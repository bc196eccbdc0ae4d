"""The private directory of one ``--api-processes`` server (the engine's IPC socket, the shared metrics files), and
who removes it: the parent when it exits, or, if the parent was killed outright, the last of its children to leave.

Every process of the server holds a shared ``flock`` on a file in the directory while it runs. A child on its way out
trades its hold for an exclusive one without waiting: only the last process out gets it, and removes the directory.
The kernel drops the locks of a process however it ends, so one killed with SIGKILL never keeps the directory alive.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import threading
from pathlib import Path

LOCK_FILE = ".lock"


class RunDir:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._lock = threading.Lock()  # leave() runs on the main thread, or on the parent watch's before its exit

    def _take_fd(self) -> int | None:
        with self._lock:
            fd, self._fd = self._fd, None
        return fd

    @classmethod
    def create(cls) -> RunDir:
        """A new directory in the temporary directory (``TMPDIR``), held by this process (the parent)."""
        run_dir = cls(Path(tempfile.mkdtemp(prefix="embedserve-")))
        run_dir.hold()
        return run_dir

    def hold(self) -> bool:
        """Hold the directory for as long as this process runs; False if it is gone or being removed (the parent
        died and the others left while this process was starting)."""
        try:
            fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def leave(self) -> bool:
        """Drop this process's hold, and remove the directory if no other process holds it; True if removed."""
        fd = self._take_fd()
        if fd is None:
            return False
        try:
            # Not atomic (the shared hold is dropped first), which is what we want: of two leaving at once, the
            # second always finds the first's hold gone.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # the parent or another child still runs
        else:
            shutil.rmtree(self.path, ignore_errors=True)
            return True
        finally:
            os.close(fd)

    def remove(self) -> None:
        """The parent, once its children have stopped: remove the directory whatever still holds it."""
        fd = self._take_fd()
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
        shutil.rmtree(self.path, ignore_errors=True)
