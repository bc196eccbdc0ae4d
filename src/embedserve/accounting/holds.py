"""Credit holds: a bulk job's credits taken from the key once, then charged part by part, the rest given back.

A hold is a usage-ledger row in status ``held``: the same ledger and the same conditional debit as an online
reservation, so a key never goes negative. Each settled part moves credits from the hold into a ``charged`` row of
its own, in the caller's transaction (the one that records the part as done), so a part is charged exactly once
whatever crashes. The gateway's reconciler only refunds ``reserved`` rows: a hold outlives the process that made it.
"""

from __future__ import annotations

import logging
import uuid

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from embedserve.accounting.credits import CHARGED, REFUNDED, _credits, close_and_refund_in, debit_in, refuse_in, utc_day
from embedserve.accounting.schema import ledger

logger = logging.getLogger(__name__)
HELD = "held"
HOLDER = "hold"  # the ledger's instance_id for holds: no gateway instance owns them


async def hold_in(
    conn: AsyncConnection,
    *,
    key_id: str,
    request_id: str,
    model: str,
    inputs: int,
    tokens: int,
    credits: int,
    at: float,
) -> str:
    """Debit ``credits`` and file the hold; raises ``InsufficientQuotaError`` (nothing debited) when short."""
    if await debit_in(conn, key_id=key_id, credits=credits) is None:
        await refuse_in(conn, key_id=key_id, cost=f"This batch costs {_credits(credits)} and your key")
    hold_id = str(uuid.uuid4())
    await conn.execute(
        ledger.insert().values(
            id=hold_id, key_id=key_id, request_id=request_id[:128], model=model[:200], inputs=inputs, tokens=tokens,
            credits=credits, status=HELD, instance_id=HOLDER, created_at=at, day=utc_day(at),
        )
    )  # fmt: skip
    return hold_id


async def held_left(conn: AsyncConnection, hold_id: str) -> int | None:
    """The credits the hold has left to charge; None once it is closed."""
    query = sa.select(ledger.c.credits).where(ledger.c.id == hold_id, ledger.c.status == HELD)
    left = (await conn.execute(query)).scalar()
    return None if left is None else int(left)


async def settle_part_in(
    conn: AsyncConnection, hold_id: str, *, request_id: str, inputs: int, tokens: int, credits: int, at: float
) -> int:
    """Move ``credits`` from the hold into a charged row for one completed part (no balance change); a part that
    costs more than the hold has left is charged what is left (the key was debited the held price, never more).
    Returns the credits charged."""
    left = (
        await conn.execute(
            sa.select(ledger.c.credits).where(ledger.c.id == hold_id, ledger.c.status == HELD).with_for_update()
        )
    ).scalar()
    if left is not None and left < credits:
        logger.warning("credit hold %s: a part costs %d, %d left; charging %d", hold_id, credits, left, left)
        credits = left
    row = (
        await conn.execute(
            ledger.update()
            .where(ledger.c.id == hold_id, ledger.c.status == HELD, ledger.c.credits >= credits)
            .values(
                credits=ledger.c.credits - credits,
                tokens=ledger.c.tokens - tokens,
                inputs=ledger.c.inputs - inputs,
            )
            .returning(ledger.c.key_id, ledger.c.model)
        )
    ).first()
    if row is None:
        raise RuntimeError(f"credit hold {hold_id} is closed")
    await conn.execute(
        ledger.insert().values(
            id=str(uuid.uuid4()), key_id=row.key_id, request_id=request_id[:128], model=row.model, inputs=inputs,
            tokens=tokens, credits=credits, status=CHARGED, instance_id=HOLDER, created_at=at, settled_at=at,
            day=utc_day(at),
        )
    )  # fmt: skip
    return credits


async def release_in(conn: AsyncConnection, hold_id: str, *, at: float) -> int:
    """Give back what the hold still has and close it; returns the credits refunded (0 if already closed)."""
    return await close_and_refund_in(conn, hold_id, open_status=HELD, status=REFUNDED, at=at) or 0
