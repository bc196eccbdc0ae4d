"""The two Ray Data stages of ``batch run --ray-address``: reading a chunk of the input, and embedding it.

Each stage runs on Ray workers; nothing here imports ``ray`` at module level (the driver side is ``ray_runner``).
A chunk travels as columns (``number``, ``custom_id``, ``body`` as JSON bytes); its outcomes come back as columns
the driver turns into the same ``LineOutcome`` objects the in-process run writes, through the same ``Sink``.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Coroutine, Iterator, Sequence
from typing import Any, TypeVar

import numpy as np
import orjson

from embedserve.batch.lines import BatchLine, LineOutcome
from embedserve.batch.sources import Source
from embedserve.settings import EngineSettings

Columns = dict[str, Any]
T = TypeVar("T")
CALLS_PER_ACTOR = 2  # chunks an actor works on at once: one embedding while the next is tokenised


class ChunkReader:
    """Read stage (a callable class for ``map_batches``, on one actor): each plan row becomes its chunk's lines, read
    as ``Source.lines`` reads them, each record and each row group once per run.

    JSONL and CSV chunks are read from the byte offset of their first record. A Parquet chunk carries on with the
    row-group reader the chunk before it left off, since the chunks reach the one reader in order; a chunk that does
    not follow on (an actor restarted) opens a reader at the row group that holds its first row. Reading each chunk
    afresh would decode a big row group once per chunk in it: Parquet cannot start inside a row group.
    """

    def __init__(self, *, source: Source) -> None:
        self.source = source
        self.rows: Iterator[BatchLine] = iter(())
        self.next_number = -1  # the row number ``rows`` gives next

    def __call__(self, plan: Columns) -> Columns:
        lines: list[BatchLine] = []
        for i in range(len(plan["rows"])):
            chunk = {key: int(values[i]) for key, values in plan.items()}
            lines.extend(itertools.islice(self._lines(chunk), chunk["rows"]))
        return line_columns(lines)

    def _lines(self, chunk: dict[str, int]) -> Iterator[BatchLine]:
        if self.source.kind != "parquet":
            return self.source.lines_at(chunk["offset"], chunk["number"])
        if chunk["number"] != self.next_number:
            self.rows = self.source.row_group_lines(chunk["group"], over=chunk["over"], number=chunk["number"])
        self.next_number = chunk["number"] + chunk["rows"]
        return self.rows


def line_columns(lines: Sequence[BatchLine]) -> Columns:
    """Lines as the columns the embed stage (and a server's Ray actors) take."""
    return {
        "number": np.array([line.number for line in lines], dtype=np.int64),
        "custom_id": np.array([line.custom_id for line in lines], dtype=object),
        "body": np.array([line.json_body() for line in lines], dtype=object),
    }


class Embedder:
    """Embed stage (a callable class for ``map_batches``): one engine per actor, loaded once, reused for every chunk.

    Lines go through ``LineRunner``, hence ``EmbeddingService`` and the ``/v1/embeddings`` codec: a line's result
    is what the in-process run (and the route) gives for it.
    """

    def __init__(self, engine: EngineSettings, *, max_inputs: int, credits_per_1k_tokens: float, keep_vectors: bool):
        import ray

        from embedserve.accounting.open_gateway import OpenGateway
        from embedserve.accounting.pricing import price
        from embedserve.api.batch_codec import EmbeddingsCodec
        from embedserve.batch.lines import LineRunner
        from embedserve.engine.engine import Engine
        from embedserve.engine.scheduler import Priority
        from embedserve.service import EmbeddingService

        # The engine lives on its own event loop thread, so that the actor's calls (CALLS_PER_ACTOR at once) all
        # feed one scheduler: the next chunk is validated and tokenised while this one runs, as in-process.
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="embedder-loop", daemon=True)
        self.thread.start()
        self.engine = Engine(engine)
        self._wait(self.engine.start())
        gateway = OpenGateway(credits_per_1k_tokens=credits_per_1k_tokens)
        service = EmbeddingService(engine=self.engine, gateway=gateway, max_inputs=max_inputs)
        self.runner = LineRunner(service=service, codec=EmbeddingsCodec(), priority=Priority.ONLINE,
                                 price=lambda t: price(t, credits_per_1k_tokens=credits_per_1k_tokens),
                                 keep_vectors=keep_vectors)  # fmt: skip
        self.node = ray.get_runtime_context().get_node_id()
        self.ready = time.time()  # the engine loaded: the driver's tokens/s counts from the first actor ready

    def __call__(self, batch: Columns) -> Columns:
        lines = [BatchLine(number=int(n), custom_id=str(c), body=orjson.loads(b))
                 for n, c, b in zip(batch["number"], batch["custom_id"], batch["body"], strict=True)]  # fmt: skip
        outcomes = self._wait(self.runner.run_many(lines))
        columns = outcome_columns(outcomes, node=self.node)
        columns["ready"] = np.full(len(outcomes), self.ready, dtype=np.float64)
        return columns

    def _wait(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def __del__(self) -> None:
        loop = getattr(self, "loop", None)  # absent on Ray's ActorClass wrapper, which subclasses this class
        if loop is not None and loop.is_running():
            self._wait(self.engine.stop())
            loop.call_soon_threadsafe(loop.stop)
            self.thread.join(timeout=10)


def outcome_columns(outcomes: Sequence[LineOutcome], *, node: str) -> Columns:
    def vectors(o: LineOutcome) -> bytes:
        return b"" if o.vectors is None else np.ascontiguousarray(o.vectors, dtype=np.float32).tobytes()

    return {
        "ok": np.array([o.ok for o in outcomes], dtype=bool),
        "custom_id": np.array([o.custom_id for o in outcomes], dtype=object),
        "data": np.array([o.data for o in outcomes], dtype=object),
        "counts": np.array([(o.inputs, o.tokens, o.credits) for o in outcomes], dtype=np.int64).reshape(-1, 3),
        "vectors": np.array([vectors(o) for o in outcomes], dtype=object),
        "node": np.array([node] * len(outcomes), dtype=object),
    }


def outcomes_from(columns: Columns) -> list[LineOutcome]:
    """The driver's side of ``outcome_columns``."""
    outcomes = []
    for ok, custom_id, data, counts, raw in zip(columns["ok"], columns["custom_id"], columns["data"],
                                                columns["counts"], columns["vectors"], strict=True):  # fmt: skip
        inputs, tokens, credits = (int(x) for x in counts)
        vectors = np.frombuffer(raw, dtype=np.float32).reshape(inputs, -1) if raw else None
        outcomes.append(LineOutcome(bool(ok), str(custom_id), bytes(data), inputs, tokens, credits, vectors))
    return outcomes
