"""``serve --ray-address``: the server's batch jobs embed their lines on a Ray actor pool instead of its own engine.

The server still drives each job (claim, lease, validation, credits, durable chunks, resume) exactly as in-process;
only ``run_many`` changes: a chunk is split across ``Embedder`` actors (one engine each, loaded once) and the
outcomes come back as the same ``LineOutcome`` objects. Ray Data's streaming pipeline is the CLI's path; here the
server needs each chunk back before it records it, so the actors are called directly.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from typing import Any

from embedserve.batch.lines import BatchLine, LineOutcome, LineRunner, with_credits
from embedserve.batch.ray_stages import CALLS_PER_ACTOR, Embedder, line_columns, outcomes_from
from embedserve.settings import Settings


class RayLineRunner(LineRunner):
    """A ``LineRunner`` whose lines run on Ray actors; judging (validation) stays on the server's service."""

    def __init__(self, *, actors: Sequence[Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.actors = list(actors)

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
        outcomes = [outcome for columns in results for outcome in outcomes_from(columns)]
        if price is None:
            return outcomes
        return [with_credits(o, price(o.tokens)) for o in outcomes]


def start_actors(settings: Settings, address: str, *, cpus_per_actor: float = 1.0) -> list[Any]:
    """Attach to ``address`` and start the pool (sized as the CLI's: half a CPU left free)."""
    from embedserve.batch.ray_runner import connect, pool_size

    ray = connect(address)
    actors, per_actor = pool_size(float(ray.cluster_resources().get("CPU", 1)), cpus_per_actor)
    engine = settings.engine
    if engine.threads is None:
        engine = engine.model_copy(update={"threads": max(1, math.ceil(per_actor))})
    remote = ray.remote(num_cpus=per_actor, scheduling_strategy="SPREAD", max_concurrency=CALLS_PER_ACTOR)(Embedder)
    kwargs = {"max_inputs": settings.max_inputs, "credits_per_1k_tokens": settings.credits_per_1k_tokens}
    return [remote.remote(engine, keep_vectors=False, **kwargs) for _ in range(actors)]
