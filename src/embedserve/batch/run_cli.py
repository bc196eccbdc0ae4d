"""``embedserve batch run INPUT -o OUTPUT``: the batch work without a server, streamed chunk by chunk.

Lines go through the same ``LineRunner`` (hence ``EmbeddingService``) as the server's jobs; with nothing online to
yield to, at the normal priority. Memory holds one chunk of lines and vectors at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import sys
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from embedserve.accounting.open_gateway import OpenGateway
from embedserve.accounting.pricing import price
from embedserve.batch.lines import BatchLine, LineCodec, LineOutcome, LineRunner
from embedserve.batch.sinks import Sink
from embedserve.batch.sources import Source
from embedserve.engine.scheduler import Priority
from embedserve.errors import InvalidRequestError
from embedserve.service import EmbeddingService
from embedserve.settings import Settings

logger = logging.getLogger(__name__)
LOG_EVERY_S = 10.0
CHUNKS_AHEAD = 2


def add_batch_command(sub: argparse._SubParsersAction[argparse.ArgumentParser], engine_flags: dict[str, dict]) -> None:  # type: ignore[type-arg]
    group = sub.add_parser("batch", help="bulk embedding without a server")
    batch = group.add_subparsers(dest="batch_command", required=True)
    run = batch.add_parser("run", help="embed an OpenAI batch JSONL file or a corpus (JSONL, Parquet, CSV)")
    run.add_argument("input", type=Path, help="OpenAI batch .jsonl, or a corpus .jsonl/.parquet/.csv")
    run.add_argument("-o", "--output", type=Path, required=True, help=".jsonl (OpenAI output lines) or .parquet")
    run.add_argument("--text-column", help="the corpus column to embed (a corpus input needs it)")
    run.add_argument("--id-column", help="the corpus column to use as the row id (default: the row number)")
    run.add_argument("--resume", action="store_true", help="continue an interrupted run into the same OUTPUT")
    run.add_argument("--chunk-rows", type=int, default=256, help="rows per step (default 256)")
    for flag, kwargs in engine_flags.items():
        run.add_argument(flag, default=None, **kwargs)
    from embedserve.batch.ray_runner import add_ray_flags  # imports no Ray

    add_ray_flags(run)
    run.set_defaults(func=run_command)


def run_command(args: argparse.Namespace, settings: Settings) -> int:
    from embedserve.api.batch_codec import EmbeddingsCodec  # the /v1/embeddings wire rules, as on the server

    source = Source(args.input, text_column=args.text_column, id_column=args.id_column)
    if args.output.exists() and not args.resume:
        raise InvalidRequestError(f"{args.output} exists: pass --resume to continue it, or remove it.")
    if getattr(args, "ray_address", None):
        from embedserve.batch.ray_runner import run_ray_command

        return run_ray_command(args, settings, source)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    return asyncio.run(run_batch(source, args.output, settings=settings, codec=EmbeddingsCodec(),
                                 resume=args.resume, chunk_rows=max(1, args.chunk_rows)))  # fmt: skip


async def run_batch(
    source: Source, output: Path, *, settings: Settings, codec: LineCodec, resume: bool, chunk_rows: int,
    stream: TextIO | None = None,
) -> int:  # fmt: skip
    from embedserve.engine.engine import Engine

    engine = Engine(settings.engine)
    await engine.start()
    try:
        gateway = OpenGateway(credits_per_1k_tokens=settings.credits_per_1k_tokens)
        service = EmbeddingService(engine=engine, gateway=gateway, max_inputs=settings.max_inputs)
        rate = settings.credits_per_1k_tokens
        runner = LineRunner(service=service, codec=codec, price=lambda t: price(t, credits_per_1k_tokens=rate),
                            priority=Priority.ONLINE, keep_vectors=output.suffix.lower() == ".parquet")  # fmt: skip
        sink = Sink(output, resume=resume, dim=engine.info.dim)
        meter = Meter(total=source.count(), done=sink.rows_done, stream=stream or sys.stderr)
        lines = source.lines(skip=sink.rows_done)
        try:
            await _pipeline(iter(lambda: list(itertools.islice(lines, chunk_rows)), []), runner, sink, meter)
        except BaseException:
            sink.release()  # --resume picks up from the last durable chunk
            raise
        sink.close()
        meter.finish()
        return 0
    finally:
        await engine.stop()


async def _pipeline(chunks: Iterator[list[BatchLine]], runner: LineRunner, sink: Sink, meter: Meter) -> None:
    """Chunks run ``CHUNKS_AHEAD`` deep and are written in order, off the event loop: the next chunk is queued on the
    engine while the last one is written and fsynced, so the model never waits for the files (run one at a time, it
    stood idle between chunks)."""
    ahead: deque[asyncio.Task[list[LineOutcome]]] = deque()
    try:
        for chunk in chunks:
            ahead.append(asyncio.create_task(runner.run_many(chunk)))
            if len(ahead) >= CHUNKS_AHEAD:
                await _write(await ahead.popleft(), sink, meter)
        while ahead:
            await _write(await ahead.popleft(), sink, meter)
    finally:
        for task in ahead:
            task.cancel()


async def _write(outcomes: list[LineOutcome], sink: Sink, meter: Meter) -> None:
    await asyncio.to_thread(sink.write, outcomes)
    meter.update(rows=len(outcomes), inputs=sum(o.inputs for o in outcomes), tokens=sum(o.tokens for o in outcomes))


class Meter:
    """A progress bar on a terminal (rows, inputs, tokens/s, ETA); a log line every 10 s otherwise."""

    def __init__(self, *, total: int, done: int, stream: TextIO) -> None:
        self.total, self.done, self.stream = total, done, stream
        self.inputs = self.tokens = 0
        self.started = self.logged = time.monotonic()
        self.tty = stream.isatty()

    def update(self, *, rows: int, inputs: int, tokens: int) -> None:
        self.done += rows
        self.inputs += inputs
        self.tokens += tokens
        now = time.monotonic()
        if self.tty:
            self.stream.write("\r" + self._line(now))
            self.stream.flush()
        elif now - self.logged >= LOG_EVERY_S:
            self.logged = now
            logger.info("batch run: %s", self._line(now))

    def _line(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-9)
        rate = self.tokens / elapsed
        rows_rate = self.done / elapsed if self.done else 0
        eta = (self.total - self.done) / rows_rate if rows_rate else 0
        width = 30
        filled = int(width * self.done / self.total) if self.total else width
        return (f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} rows, {self.inputs} inputs, "
                f"{rate:,.0f} tokens/s, ETA {eta:,.0f} s")  # fmt: skip

    def finish(self) -> None:
        now = time.monotonic()
        if self.tty:
            self.stream.write("\r" + self._line(now) + "\n")
        logger.info("batch run done: %s in %.1f s", self._line(now), now - self.started)
