"""Durable progress of a job: a chunk's result parts written crash-safely, then recorded as done in one transaction
with its counters and its share of the job's credits, so a chunk is counted and charged exactly once, and each of
its lines shows what it was charged."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from embedserve.accounting.holds import held_left, settle_part_in
from embedserve.accounting.store import Store
from embedserve.batch.jobs import CANCELLING, IN_PROGRESS
from embedserve.batch.lines import LineOutcome, with_credits
from embedserve.batch.storage import Storage, atomic_writer
from embedserve.batch.tables import chunks, jobs

logger = logging.getLogger(__name__)


class LostClaim(Exception):
    """Another replica holds the job now (this one stalled past its lease): stop without recording anything."""


@dataclass(frozen=True, slots=True)
class ChunkRow:
    seq: int
    out_part: str | None
    err_part: str | None


def _write_part(storage: Storage, job_id: str, name: str, lines: Sequence[bytes]) -> str | None:
    if not lines:
        return None
    with atomic_writer(storage.job_dir(job_id) / name) as handle:
        for data in lines:
            handle.write(data)
    return name


async def within_hold(store: Store, hold_id: str, outcomes: Sequence[LineOutcome]) -> Sequence[LineOutcome]:
    """The lines as they will be charged: when the hold has less left than they cost (a job held before its price
    was recorded, resumed at a higher one), the first lines are charged in full, the next what is left, the rest
    nothing, and each line shows its own figure. Before the parts are written, so their lines say what the chunk's
    settlement (``settle_part_in``, which clamps the same way) charges; the caller commits one chunk at a time."""
    cost = sum(o.credits for o in outcomes)
    if not cost:
        return outcomes
    async with store.begin() as conn:
        left = await held_left(conn, hold_id)
    if left is None or left >= cost:
        return outcomes
    logger.warning("credit hold %s: a part costs %d, %d left; its lines are charged (and show) %d", hold_id, cost,
                   left, left)  # fmt: skip
    fitted = []
    for outcome in outcomes:
        charged = min(outcome.credits, left)
        left -= charged
        fitted.append(with_credits(outcome, charged))
    return fitted


async def commit_chunk(
    store: Store, storage: Storage, *, job_id: str, hold_id: str | None, holder: str, seq: int,
    outcomes: Sequence[LineOutcome], lease_s: float,
) -> None:  # fmt: skip
    """Record the chunk ``seq`` as done; calls for one job must not overlap (what a line shows is fitted to what the
    hold has left, read before the chunk is settled)."""
    tag = holder.rsplit(":", 1)[-1][:12]
    priced = sum(o.credits for o in outcomes)  # a chunk with a price is settled even when the hold has nothing left
    if hold_id is not None:
        outcomes = await within_hold(store, hold_id, outcomes)
    # fsync takes milliseconds to seconds on a busy disk: never on the event loop
    out_part = await asyncio.to_thread(
        _write_part, storage, job_id, f"{seq:07d}-{tag}.out", [o.data for o in outcomes if o.ok]
    )
    err_part = await asyncio.to_thread(
        _write_part, storage, job_id, f"{seq:07d}-{tag}.err", [o.data for o in outcomes if not o.ok]
    )
    ok = [o for o in outcomes if o.ok]
    inputs, tokens, credits = sum(o.inputs for o in ok), sum(o.tokens for o in ok), sum(o.credits for o in ok)
    now = time.time()
    try:
        async with store.begin() as conn:
            updated = await conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.claimed_by == holder, jobs.c.status.in_([IN_PROGRESS, CANCELLING]))
                .values(
                    completed=jobs.c.completed + len(ok), failed=jobs.c.failed + len(outcomes) - len(ok),
                    inputs_done=jobs.c.inputs_done + inputs, tokens_done=jobs.c.tokens_done + tokens,
                    lease_until=now + lease_s, attempts=0,
                )
            )  # fmt: skip
            if updated.rowcount != 1:
                raise LostClaim(job_id)
            if hold_id is not None and priced:  # the chunk records what the key paid: at most what the hold had
                credits = await settle_part_in(
                    conn, hold_id, request_id=f"{job_id}#{seq}", inputs=inputs, tokens=tokens, credits=credits, at=now
                )
            if credits:
                await conn.execute(
                    jobs.update().where(jobs.c.id == job_id).values(credits_done=jobs.c.credits_done + credits)
                )
            await conn.execute(
                chunks.insert().values(
                    job_id=job_id, seq=seq, completed=len(ok), failed=len(outcomes) - len(ok), inputs=inputs,
                    tokens=tokens, credits=credits, out_part=out_part, err_part=err_part, created_at=now,
                )
            )  # fmt: skip
    except IntegrityError as exc:  # the chunk is already recorded: another holder finished it
        raise LostClaim(job_id) from exc


async def done_chunks(store: Store, job_id: str) -> list[ChunkRow]:
    query = sa.select(chunks.c.seq, chunks.c.out_part, chunks.c.err_part).where(chunks.c.job_id == job_id)
    async with store.begin() as conn:
        rows = await conn.execute(query.order_by(chunks.c.seq))
        return [ChunkRow(r.seq, r.out_part, r.err_part) for r in rows]
