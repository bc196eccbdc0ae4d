"""``serve --ray-address``: the server's batch jobs embed their lines on a Ray actor pool instead of its own engine.

The server still drives each job (claim, lease, validation, credits, durable chunks, resume) exactly as in-process;
only ``run_many`` changes: a chunk is split across ``Embedder`` actors (one engine each, loaded once) and the
outcomes come back as the same ``LineOutcome`` objects. Ray Data's streaming pipeline is the CLI's path; here the
server needs each chunk back before it records it, so the actors are called directly.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from embedserve.batch.lines import BatchLine, LineOutcome, LineRunner, with_credits
from embedserve.batch.ray_stages import CALLS_PER_ACTOR, Embedder, line_columns, outcomes_from
from embedserve.metrics import Metrics, observe_ray_lines
from embedserve.settings import Settings

logger = logging.getLogger(__name__)


@dataclass
class RayPool:
    """The server's ``Embedder`` actors, and whether this process started the Ray instance they run on."""

    ray: Any
    address: str
    actors: list[Any]
    owned: bool  # ray.init was ours (not a driver attached before): stopping the pool stops Ray and its processes

    def stop(self) -> None:
        """Kill the actors and, if this process attached to Ray, detach: a ``local`` instance is shut down and its
        processes (raylet, GCS, workers) waited for, so the server leaves none behind. Blocking: run it in a thread."""
        for actor in self.actors:
            self.ray.kill(actor)
        if self.owned:
            self.ray.shutdown(wait_for_processes=True)
        left = "local Ray instance shut down" if self.address == "local" else f"detached from {self.address}"
        logger.info("Ray pool stopped: %d actors killed; %s", len(self.actors), left if self.owned else "Ray kept")


class RayLineRunner(LineRunner):
    """A ``LineRunner`` whose lines run on Ray actors; judging (validation) stays on the server's service."""

    def __init__(self, *, pool: RayPool, metrics: Metrics | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pool = pool
        self.actors = pool.actors
        self.metrics = metrics

    async def run_many(
        self, lines: Sequence[BatchLine], *, price: Callable[[int], int] | None = None
    ) -> list[LineOutcome]:
        """``price``: the job's held price; the actors price at their own, so a line's credits (its counts and what
        its line shows) are set again here."""
        if not lines:
            return []
        size = math.ceil(len(lines) / len(self.actors))
        slices = [lines[i : i + size] for i in range(0, len(lines), size)]
        calls = [actor.__call__.remote(line_columns(part)) for actor, part in zip(self.actors, slices, strict=False)]
        results = await asyncio.gather(*calls)  # Ray's object refs are awaitable
        if self.metrics is not None:  # ops wiring: where the lines ran (and that they ran on Ray at all)
            for node, count in Counter(str(n) for columns in results for n in columns["node"]).items():
                observe_ray_lines(self.metrics, node=node, lines=count)
        outcomes = [outcome for columns in results for outcome in outcomes_from(columns)]
        if price is None:
            return outcomes
        return [with_credits(o, price(o.tokens)) for o in outcomes]


def start_pool(settings: Settings, address: str, *, cpus_per_actor: float = 1.0) -> RayPool:
    """Attach to ``address`` and start the pool (sized as the CLI's: half a CPU left free)."""
    from embedserve.batch.ray_runner import connect, pool_size

    attached = "ray" in sys.modules and sys.modules["ray"].is_initialized()
    ray = connect(address)
    cluster = float(ray.cluster_resources().get("CPU", 1))
    actors, per_actor = pool_size(cluster, cpus_per_actor)
    engine = settings.engine
    if engine.threads is None:
        engine = engine.model_copy(update={"threads": max(1, math.ceil(per_actor))})
    remote = ray.remote(num_cpus=per_actor, scheduling_strategy="SPREAD", max_concurrency=CALLS_PER_ACTOR)(Embedder)
    kwargs = {"max_inputs": settings.max_inputs, "credits_per_1k_tokens": settings.credits_per_1k_tokens}
    pool = RayPool(ray, address, [remote.remote(engine, keep_vectors=False, **kwargs) for _ in range(actors)],
                   owned=not attached)  # fmt: skip
    logger.info("batch jobs embed on Ray (%s): actors %d x %.2f CPUs (cluster: %g CPUs); online requests stay on "
                "this server's engine", address, actors, per_actor, cluster)  # fmt: skip
    return pool
