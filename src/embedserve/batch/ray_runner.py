"""``embedserve batch run --ray-address ADDR``: the same batch work on a Ray cluster, through Ray Data.

A plan of chunks (byte offsets for JSONL and CSV, row groups for Parquet) is read by one ``ChunkReader`` actor and
embedded by an actor pool (``Embedder``, one engine per actor); the results stream back in order to the driver,
which writes them through the in-process run's ``Sink`` and ``Meter``: the output files and ``--resume`` are the
same. Ray is an optional extra and is imported only here, only when asked for.

Sizing: the pool leaves ``READ_CPUS`` of the cluster to the read stage (a pool holding every CPU starves reading
and Ray Data then waits forever), and the driver gives up when no chunk arrives for ``stall_timeout`` seconds.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import logging
import math
import os
import queue
import secrets
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from embedserve.batch.ray_stages import CALLS_PER_ACTOR, ChunkReader, Embedder, outcomes_from
from embedserve.batch.run_cli import Meter
from embedserve.batch.sinks import Sink
from embedserve.batch.sources import Source
from embedserve.errors import EmbedServeError, EngineError, InvalidRequestError
from embedserve.settings import Settings

logger = logging.getLogger(__name__)
READ_CPUS = 0.5  # always free for the read stage


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise InvalidRequestError(
            "--ray-address needs Ray, an optional extra: pip install 'embedserve[ray]'."
        ) from None
    return ray


def connect(address: str) -> Any:
    """Attach to ``address`` (``local``: start an embedded cluster). Token auth: see docs/batch.md."""
    if address == "local":
        # Ray >= 2.59 turns token auth on for a new local cluster and, without a token, writes one to
        # ~/.ray/auth_token, which then switches on auth for every later `ray start --head` on this machine.
        # A token of our own for this process keeps auth on without leaving that file behind. Ray reads these
        # variables when it is imported, so they are set first (if Ray is already imported, its own default holds).
        fresh = "ray" not in sys.modules
        if fresh and os.environ.get("RAY_AUTH_MODE", "token") == "token" and not _has_token():
            os.environ["RAY_AUTH_MODE"] = "token"
            os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    ray = import_ray()
    if ray.is_initialized():  # a driver that is already attached (a server, a test session) keeps its cluster
        return ray
    if address == "local":
        ray.init(address=None, include_dashboard=False, log_to_driver=False, configure_logging=False)
        return ray
    try:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    except (RuntimeError, ConnectionError) as exc:
        if "token" in str(exc).lower():
            raise InvalidRequestError(
                f"The Ray cluster at {address} requires a token: set RAY_AUTH_TOKEN (its head node prints it with "
                f"`ray get-auth-token`) or RAY_AUTH_TOKEN_PATH. Ray said: {exc}"
            ) from None
        raise
    return ray


def _has_token() -> bool:
    return bool(os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"))


def add_ray_flags(run: argparse.ArgumentParser) -> None:
    run.add_argument(
        "--ray-address",
        default=os.environ.get("RAY_ADDRESS"),
        help="run on this Ray cluster (`local`: start one here; default $RAY_ADDRESS); needs embedserve[ray]",
    )
    run.add_argument("--ray-cpus-per-actor", type=float, default=1.0, help="CPUs per embedding actor (default 1)")
    run.add_argument("--ray-stall-timeout", type=float, default=600.0,
                     help="give up when no chunk finishes for this many seconds (default 600)")  # fmt: skip


def run_ray_command(args: argparse.Namespace, settings: Settings, source: Source) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    run_on_ray(source, args.output, settings=settings, address=args.ray_address, resume=args.resume,
               chunk_rows=max(1, args.chunk_rows), cpus_per_actor=args.ray_cpus_per_actor,
               stall_timeout=args.ray_stall_timeout)  # fmt: skip
    return 0


def pool_size(cluster_cpus: float, cpus_per_actor: float) -> tuple[int, float]:
    """(actors, CPUs per actor) that leave ``READ_CPUS`` to reading, with at least one actor."""
    room = max(cluster_cpus - READ_CPUS, 0.25)
    per = min(cpus_per_actor, room)
    return max(1, int(room // per)), per


def plan_rows(source: Source, *, skip: int, chunk_rows: int) -> list[dict[str, int]]:
    """The chunks after the ``skip`` rows done, found in one pass over the file (its metadata for Parquet): each with
    where it starts, a byte offset (JSONL, CSV) or a row group and the rows before it there (Parquet)."""
    if source.kind == "parquet":
        starts = source.row_group_offsets(skip=skip, every=chunk_rows)
        return [{"offset": -1, "group": g, "over": o, "number": n, "rows": r} for g, o, n, r in starts]
    offsets = source.line_offsets(skip=skip, every=chunk_rows)
    return [{"offset": o, "group": -1, "over": 0, "number": n, "rows": r} for o, n, r in offsets]


def run_on_ray(
    source: Source, output: Path, *, settings: Settings, address: str, resume: bool, chunk_rows: int,
    cpus_per_actor: float = 1.0, stall_timeout: float = 600.0,
) -> Counter[str]:  # fmt: skip
    """Run the batch on Ray; the rows embedded on each node (by node id)."""
    # Refused up front, with the in-process run's message: a corpus without --text-column, and for an OpenAI file
    # any bad line or repeated custom_id (the reader sees one chunk at a time, so the whole-file rules run here).
    collections.deque(source.lines() if source.kind == "openai" else itertools.islice(source.lines(), 1), maxlen=0)
    attached = "ray" in sys.modules and sys.modules["ray"].is_initialized()
    ray = connect(address)
    try:
        sink = Sink(output, resume=resume, dim=0)  # the dimension is learnt from the first vectors (Parquet only)
        nodes: Counter[str] = Counter()
        try:
            plan = plan_rows(source, skip=sink.rows_done, chunk_rows=chunk_rows)
            actors, per_actor = pool_size(float(ray.cluster_resources().get("CPU", 1)), cpus_per_actor)
            logger.info("batch run on Ray: %d chunks, %d actors x %.2f CPUs", len(plan), actors, per_actor)
            dataset = _dataset(ray, source, plan, settings, actors, per_actor, sink.parquet)
            total = sink.rows_done + sum(item["rows"] for item in plan)
            meter, first = Meter(total=total, done=sink.rows_done, stream=sys.stderr), True
            for columns in _within(stall_timeout, dataset.iter_batches(batch_size=None, batch_format="numpy")):
                outcomes = outcomes_from(columns)
                sink.dim = sink.dim or next((o.vectors.shape[1] for o in outcomes if o.vectors is not None), 0)
                sink.write(outcomes)
                nodes.update(str(n) for n in columns["node"])
                meter.update(rows=len(outcomes), inputs=sum(o.inputs for o in outcomes),
                             tokens=sum(o.tokens for o in outcomes))  # fmt: skip
                if len(outcomes):  # tokens/s counts from the first engine ready, as in-process: not actor start-up
                    ready = time.monotonic() - (time.time() - float(columns["ready"].min()))
                    meter.started = min(meter.started, ready) if not first else ready
                    first = False
        except BaseException:
            sink.release()
            raise
        if sink.parquet and not sink.dim:
            sink.dim = _model_dim(settings)
        sink.close()
        meter.finish()
        logger.info("rows per node: %s", dict(nodes))
        return nodes
    finally:
        if not attached:
            ray.shutdown()


def _model_dim(settings: Settings) -> int:
    """Only when no line gave a vector (an all-failed Parquet run still writes an empty, typed file)."""
    import asyncio

    from embedserve.engine.engine import Engine

    async def load() -> int:
        engine = Engine(settings.engine)
        await engine.start()
        await engine.stop()
        return engine.info.dim

    return asyncio.run(load())


def _dataset(
    ray: Any, source: Source, plan: list[dict[str, int]], settings: Settings, actors: int, per_actor: float,
    keep_vectors: bool,
) -> Any:  # fmt: skip
    from ray.data import ActorPoolStrategy, DataContext

    DataContext.get_current().execution_options.preserve_order = True  # the sink and --resume count rows in order
    engine = settings.engine
    if engine.threads is None:
        engine = engine.model_copy(update={"threads": max(1, math.ceil(per_actor))})
    kwargs = {"engine": engine, "max_inputs": settings.max_inputs,
              "credits_per_1k_tokens": settings.credits_per_1k_tokens, "keep_vectors": keep_vectors}  # fmt: skip
    # One reader, an actor: chunks reach it in order, so a Parquet row group is decoded once however many chunks it
    # holds (see ChunkReader). Reading is cheap next to embedding; it holds READ_CPUS, which the pool leaves free.
    read = ray.data.from_items(plan, override_num_blocks=max(1, len(plan))).map_batches(
        ChunkReader, fn_constructor_kwargs={"source": source}, batch_size=None, num_cpus=READ_CPUS,
        compute=ActorPoolStrategy(size=1),
    )  # fmt: skip
    # Two chunks per actor at once (the first actor ready still cannot hoard chunks): both go to the actor's one
    # engine, which tokenises the next while it embeds this one. Run one at a time, a sync actor's engine stood idle
    # while each chunk was validated and tokenised (local Ray 0.83x of in-process on 2 cores).
    pool = ActorPoolStrategy(
        size=actors,
        max_tasks_in_flight_per_actor=CALLS_PER_ACTOR,
        max_concurrent_calls_per_actor=CALLS_PER_ACTOR,
        enable_true_multi_threading=True,
    )
    # The default scheduling fills the driver's node first, then the others (2.60 deprecates passing SPREAD here).
    return read.map_batches(Embedder, fn_constructor_kwargs=kwargs, batch_size=None, num_cpus=per_actor, compute=pool)


def _within(timeout: float, batches: Iterator[Any]) -> Iterator[Any]:
    """``batches``, but an error instead of a silent hang when none arrives for ``timeout`` seconds. When the caller
    stops early (an error while writing, a stall, or it simply stops iterating), ``batches`` is closed, so Ray Data
    shuts its pipeline (and the actor pool) down instead of leaving it running in a driver that stays attached."""
    box: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=2)
    stop = threading.Event()

    def hand(message: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                box.put(message, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def pump() -> None:
        try:
            for batch in batches:
                if not hand(("batch", batch)):
                    break
            else:
                hand(("done", None))
        except BaseException as exc:  # handed to the driver thread
            hand(("error", exc))
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()  # in this thread, the one that iterated it

    threading.Thread(target=pump, name="ray-batches", daemon=True).start()
    try:
        while True:
            try:
                kind, item = box.get(timeout=timeout)
            except queue.Empty:
                raise EngineError(
                    f"No progress on Ray for {timeout:.0f} s: the actor pool may hold every CPU the read stage "
                    "needs, or no node can place an actor (see `ray status`)."
                ) from None
            if kind == "done":
                return
            if kind == "error":
                raise _user_error(item)
            yield item
    finally:
        stop.set()


def _user_error(exc: BaseException) -> BaseException:
    """The embedserve error inside a Ray task failure (a bad input line), else the failure itself."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, EmbedServeError):
            return seen
        seen = seen.__cause__ or getattr(seen, "cause", None)
    return exc
