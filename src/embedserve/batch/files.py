"""Uploaded and produced files: bytes under the storage root, records in the store, each owned by one key.

An upload is copied block by block (flat memory) into a temporary file, counted (bytes, lines) against the limits,
fsynced and renamed; only then is its record filed, so a record always has all of its bytes behind it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import sqlalchemy as sa

from embedserve.accounting.store import Store
from embedserve.batch.jobs import ACTIVE
from embedserve.batch.owner import Owner
from embedserve.batch.storage import Storage, atomic_writer
from embedserve.batch.tables import files, jobs
from embedserve.errors import InvalidRequestError, NotFoundError, RequestTooLargeError

BLOCK = 1 << 20
PURPOSES = frozenset({"batch"})


@dataclass(frozen=True, slots=True)
class FileLimits:
    max_bytes: int
    max_lines: int


@dataclass(frozen=True, slots=True)
class FileRecord:
    id: str
    key_id: str | None
    purpose: str
    filename: str
    bytes: int
    lines: int
    path: str
    created_at: float


def new_file_id() -> str:
    return f"file-{uuid.uuid4().hex}"


def _copy_counted(source: BinaryIO, target: BinaryIO, limits: FileLimits) -> tuple[int, int]:
    size = newlines = 0
    last = b"\n"
    while block := source.read(BLOCK):
        size += len(block)
        if size > limits.max_bytes:
            raise RequestTooLargeError(
                f"The file is larger than this server's limit of {limits.max_bytes} bytes per batch file.",
                param="file",
            )
        newlines += block.count(b"\n")
        if newlines > limits.max_lines:
            raise InvalidRequestError(
                f"The file has more than {limits.max_lines} lines; a batch file holds at most "
                f"{limits.max_lines} requests. Split it into several batches.",
                param="file",
            )
        target.write(block)
        last = block[-1:]
    lines = newlines + (0 if last == b"\n" else 1)
    if lines > limits.max_lines:
        raise InvalidRequestError(
            f"The file has {lines} lines; a batch file holds at most {limits.max_lines} requests.", param="file"
        )
    return size, lines


class FileStore:
    def __init__(self, *, store: Store, storage: Storage, limits: FileLimits) -> None:
        self.store = store
        self.storage = storage
        self.limits = limits

    async def upload(self, source: BinaryIO, *, owner: Owner, purpose: str, filename: str) -> FileRecord:
        if purpose not in PURPOSES:
            raise InvalidRequestError(f"'purpose' must be 'batch' on this server (got '{purpose}').", param="purpose")
        file_id = new_file_id()
        path = self.storage.file_path(file_id)

        def write() -> tuple[int, int]:
            with atomic_writer(path) as target:
                return _copy_counted(source, target, self.limits)

        size, lines = await asyncio.to_thread(write)
        record = FileRecord(
            id=file_id, key_id=owner.key_id, purpose=purpose, filename=filename[:512] or "upload.jsonl",
            bytes=size, lines=lines, path=str(path.relative_to(self.storage.root)), created_at=time.time(),
        )  # fmt: skip
        try:
            await self.file_record(record)
        except BaseException:  # no record, no file: bytes nobody can name would stay on disk for good
            await asyncio.shield(asyncio.to_thread(path.unlink, missing_ok=True))
            raise
        return record

    async def file_record(self, record: FileRecord, conn: Any = None) -> None:
        values = {name: getattr(record, name) for name in FileRecord.__slots__}
        if conn is not None:
            await conn.execute(files.insert().values(**values))
            return
        async with self.store.begin() as c:
            await c.execute(files.insert().values(**values))

    async def get(self, file_id: str, *, owner: Owner) -> FileRecord:
        async with self.store.begin() as conn:
            row = (
                await conn.execute(sa.select(files).where(files.c.id == file_id, owner.visible(files.c.key_id)))
            ).first()
        if row is None:
            raise NotFoundError(f"No such file: '{file_id}'.", param="file_id")
        return FileRecord(**row._mapping)

    async def list(self, *, owner: Owner, purpose: str | None, limit: int, after: str | None) -> Sequence[FileRecord]:
        query = sa.select(files).where(owner.visible(files.c.key_id))
        if purpose:
            query = query.where(files.c.purpose == purpose)
        if after:
            anchor = await self.get(after, owner=owner)
            query = query.where(
                sa.or_(
                    files.c.created_at < anchor.created_at,
                    sa.and_(files.c.created_at == anchor.created_at, files.c.id < anchor.id),
                )
            )
        query = query.order_by(files.c.created_at.desc(), files.c.id.desc()).limit(limit)
        async with self.store.begin() as conn:
            return [FileRecord(**row._mapping) for row in await conn.execute(query)]

    def path_of(self, record: FileRecord) -> Path:
        return self.storage.root / record.path

    async def delete(self, file_id: str, *, owner: Owner) -> None:
        """Delete a file no active batch reads; the check and the delete hold the file's row against a racing
        batch create (which takes the same row before filing its job)."""
        record = await self.get(file_id, owner=owner)
        async with self.store.begin() as conn:
            await conn.execute(sa.select(files.c.id).where(files.c.id == record.id).with_for_update())
            query = sa.select(jobs.c.id).where(jobs.c.input_file_id == record.id, jobs.c.status.in_(ACTIVE)).limit(1)
            if (await conn.execute(query)).first() is not None:
                raise InvalidRequestError(f"File '{file_id}' is the input of a batch still running; cancel it first.")
            await conn.execute(files.delete().where(files.c.id == record.id))
        await asyncio.to_thread(self.path_of(record).unlink, missing_ok=True)
