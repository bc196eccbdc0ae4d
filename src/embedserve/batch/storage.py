"""File bytes under the storage root, written crash-safely: a temporary file, fsync, then an atomic rename.

A reader never sees half a file: after a crash a name either holds all of its bytes or does not exist.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_writer(path: Path) -> Iterator[BinaryIO]:
    """Write ``path`` all-or-nothing; on an exception the temporary file is removed and ``path`` is untouched."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with tmp.open("wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


class Storage:
    """The storage root: ``files/<file id>`` for uploads and results, ``jobs/<job id>/`` for a job's parts."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def file_path(self, file_id: str) -> Path:
        return self.root / "files" / file_id

    def job_dir(self, job_id: str) -> Path:
        return self.root / "jobs" / job_id

    def job_ids(self) -> list[str]:
        """The jobs with a parts folder (a finished job's is removed at its end, or by the start-up sweep)."""
        folder = self.root / "jobs"
        return [p.name for p in folder.iterdir() if p.is_dir()] if folder.is_dir() else []

    def remove_job_dir(self, job_id: str) -> None:
        folder = self.job_dir(job_id)
        if folder.is_dir():
            for part in folder.iterdir():
                part.unlink(missing_ok=True)
            folder.rmdir()
