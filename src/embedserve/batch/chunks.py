"""A job's input read as chunks of ``chunk_lines`` lines, numbered from 0: the runner runs the chunks not done yet,
and a job's end names the lines of the chunks that never ran; both read them here, so they cannot disagree."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path

from embedserve.batch.jobs import JobRecord
from embedserve.batch.lines import BatchLine, parse_line
from embedserve.batch.validate import iter_raw_lines


def next_chunk(lines: Iterator[tuple[int, bytes]], *, size: int, seq: int, done: set[int]) -> tuple[int, list[bytes]]:
    """The first chunk from ``seq`` on that is not done, or (seq, []) at the end; blocking, so called in a thread
    (on resume, the done chunks are read past here, off the event loop)."""
    while True:
        raws = [raw for _, raw in itertools.islice(lines, size)]
        if not raws or seq not in done:
            return seq, raws
        seq += 1


async def chunks_of(job: JobRecord, path: Path, done: set[int]) -> AsyncGenerator[tuple[int, list[bytes]], None]:
    seq = 0
    with contextlib.closing(iter_raw_lines(path)) as lines:
        while True:
            seq, raws = await asyncio.to_thread(next_chunk, lines, size=job.chunk_lines, seq=seq, done=done)
            if not raws:
                return
            yield seq, raws
            seq += 1


def parse_chunk(raws: list[bytes], *, first: int, endpoint: str) -> list[BatchLine]:
    lines = []
    for offset, raw in enumerate(raws):
        parsed = parse_line(raw, number=first + offset + 1, endpoint=endpoint)
        assert isinstance(parsed, BatchLine), "validated lines parse"
        lines.append(parsed)
    return lines


def lines_not_run(job: JobRecord, path: Path, done: set[int]) -> Iterator[BatchLine]:
    """Every line of the chunks not in ``done``, in input order; blocking (one thread reads the whole file)."""
    seq = 0
    with contextlib.closing(iter_raw_lines(path)) as lines:
        while True:
            seq, raws = next_chunk(lines, size=job.chunk_lines, seq=seq, done=done)
            if not raws:
                return
            yield from parse_chunk(raws, first=seq * job.chunk_lines, endpoint=job.endpoint)
            seq += 1
