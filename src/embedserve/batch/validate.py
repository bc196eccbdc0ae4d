"""Reading a batch input file line by line (flat memory) and validating it before any work runs.

A job fails validation, with each bad line named, when a line is not a JSON object, lacks ``custom_id`` or ``body``,
repeats a ``custom_id``, names another ``url`` than the batch's endpoint, is longer than an online request body may
be, or the file is over the limits. A line whose *body* ``/v1/embeddings`` would refuse does not fail the job: it will
go to the error file, and costs nothing. Lines are read and parsed in a thread, a group at a time: a 23 MB line must
not stall the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from embedserve.batch.lines import BatchLine, LineProblem, LineRunner, parse_line

JUDGE_GROUP = 64
GROUP_BYTES = 8 << 20  # a group read in one go stops growing past this many bytes
MAX_REPORTED = 100  # errors.data stops growing here; the count of bad lines is in the last message


@dataclass(frozen=True, slots=True)
class JobLimits:
    max_requests: int
    max_inputs: int
    max_line_bytes: int | None = None  # the online body limit: a line is one request body


@dataclass(slots=True)
class Validation:
    total: int = 0
    inputs: int = 0
    tokens: int = 0
    credits: int = 0
    problems: list[LineProblem] = field(default_factory=list)


class CustomIds:
    """The custom_ids seen so far in a file: each line needs its own (the server's jobs and ``batch run`` alike)."""

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def repeat(self, line: BatchLine) -> LineProblem | None:
        """The problem with ``line`` if its custom_id was seen before; else None, and it is now seen."""
        if line.custom_id in self._seen:
            return LineProblem(line.number, "duplicate_custom_id", f"Line {line.number} repeats custom_id "
                               f"'{line.custom_id[:64]}'; each line needs its own.", "custom_id")  # fmt: skip
        self._seen.add(line.custom_id)
        return None


def iter_raw_lines(path: Path, *, skip: int = 0) -> Generator[tuple[int, bytes], None, None]:
    """(1-based line number, bytes) of each non-blank line, from the ``skip``-th non-blank line on."""
    seen = 0
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            seen += 1
            if seen > skip:
                yield number, raw


def take(lines: Iterator[tuple[int, bytes]], count: int) -> list[tuple[int, bytes]]:
    """The next ``count`` lines, fewer once ``GROUP_BYTES`` are read (blocking: call it in a thread)."""
    group: list[tuple[int, bytes]] = []
    size = 0
    for item in itertools.islice(lines, count):
        group.append(item)
        size += len(item[1])
        if size >= GROUP_BYTES:
            break
    return group


def _read_parsed(
    lines: Iterator[tuple[int, bytes]], *, endpoint: str, max_bytes: int | None
) -> list[BatchLine | LineProblem]:
    parsed: list[BatchLine | LineProblem] = []
    for number, raw in take(lines, JUDGE_GROUP):
        if max_bytes is not None and len(raw) > max_bytes:
            parsed.append(
                LineProblem(number, "line_too_large", f"Line {number} is {len(raw)} bytes, over this server's limit "
                            f"of {max_bytes} bytes for a request body.", "body")
            )  # fmt: skip
            continue
        parsed.append(parse_line(raw, number=number, endpoint=endpoint))
    return parsed


def _check_limits(result: Validation, number: int, limits: JobLimits, inputs: int) -> None:
    before = result.inputs
    result.inputs += inputs
    if before <= limits.max_inputs < result.inputs:
        result.problems.append(
            LineProblem(number, "too_many_inputs", f"The batch has more than {limits.max_inputs} inputs in all, "
                        f"this server's limit per batch; line {number} goes over it.", "input")
        )  # fmt: skip


async def _judge(group: list[BatchLine], runner: LineRunner, result: Validation, limits: JobLimits) -> None:
    costs = await asyncio.gather(*(runner.judge(line) for line in group))
    for line, cost in zip(group, costs, strict=True):
        inputs, tokens, credits = cost or (0, 0, 0)
        _check_limits(result, line.number, limits, inputs)
        result.tokens += tokens
        result.credits += credits


async def validate(path: Path, *, endpoint: str, limits: JobLimits, runner: LineRunner) -> Validation:
    result = Validation()
    seen = CustomIds()
    group: list[BatchLine] = []
    with contextlib.closing(iter_raw_lines(path)) as lines:
        while batch := await asyncio.to_thread(_read_parsed, lines, endpoint=endpoint, max_bytes=limits.max_line_bytes):
            for parsed in batch:
                _count(result, parsed.number, limits)
                if isinstance(parsed, LineProblem):
                    result.problems.append(parsed)
                elif repeat := seen.repeat(parsed):
                    result.problems.append(repeat)
                else:
                    group.append(parsed)
            if len(group) >= JUDGE_GROUP:
                await _judge(group, runner, result, limits)
                group = []
    if group:
        await _judge(group, runner, result, limits)
    if result.total == 0:
        result.problems.append(LineProblem(0, "empty_file", "The input file has no requests."))
    return result


def _count(result: Validation, number: int, limits: JobLimits) -> None:
    result.total += 1
    if result.total == limits.max_requests + 1:
        result.problems.append(
            LineProblem(number, "too_many_requests", f"The file has more than {limits.max_requests} requests, "
                        f"this server's limit per batch; line {number} is the first over it.")
        )  # fmt: skip
