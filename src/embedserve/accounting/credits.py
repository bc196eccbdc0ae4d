"""Credit reservations in the usage ledger: reserve before inference, charge or refund after.

Every balance change is one conditional UPDATE (``credits >= n``), never read-modify-write, so any
number of replicas can debit one key at once and the balance never goes negative. Each ledger row leaves
``reserved`` exactly once (the UPDATE is guarded by ``status = 'reserved'``): nothing is charged or
refunded twice.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, NoReturn

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from embedserve.accounting.schema import api_keys, ledger
from embedserve.accounting.store import Store
from embedserve.accounting.values import Reservation
from embedserve.errors import AuthenticationError, InsufficientQuotaError

logger = logging.getLogger(__name__)

RESERVED, CHARGED, REFUNDED, RECONCILED = "reserved", "charged", "refunded", "reconciled"


def _credits(n: int) -> str:
    return f"{n} credit" if n == 1 else f"{n} credits"


def utc_day(at: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(at))


class CreditLedger:
    def __init__(self, store: Store, *, instance_id: str, clock: Callable[[], float]) -> None:
        self._store = store
        self._instance_id = instance_id
        self._clock = clock

    async def reserve(
        self, *, key_id: str, request_id: str, model: str, inputs: int, tokens: int, credits: int
    ) -> Reservation:
        """Debit ``credits`` (unless unlimited) and file a ``reserved`` ledger row, in one transaction."""
        now = self._clock()
        async with self._store.begin() as conn:
            debited = await debit_in(conn, key_id=key_id, credits=credits)
            if debited is None:
                await self._refuse(conn, key_id=key_id, credits=credits)
            balance = None if debited is None or debited.credits is None else int(debited.credits)
            reservation = Reservation(id=str(uuid.uuid4()), key_id=key_id, credits=credits, balance_after=balance)
            await conn.execute(
                ledger.insert().values(
                    id=reservation.id,
                    key_id=key_id,
                    request_id=request_id[:128],
                    model=model[:200],
                    inputs=inputs,
                    tokens=tokens,
                    credits=credits,
                    status=RESERVED,
                    instance_id=self._instance_id,
                    created_at=now,
                    day=utc_day(now),
                )
            )
        return reservation

    async def _refuse(self, conn: AsyncConnection, *, key_id: str, credits: int) -> None:
        await refuse_in(conn, key_id=key_id, cost=f"This request costs {_credits(credits)} and key {key_id}")

    async def commit(self, reservation: Reservation) -> bool:
        """Mark the reservation charged (its credits were debited when it was reserved); if a reconciler refunded
        it meanwhile, debit it again if possible."""
        async with self._store.begin() as conn:
            done = await conn.execute(
                ledger.update()
                .where(ledger.c.id == reservation.id, ledger.c.status == RESERVED)
                .values(status=CHARGED, settled_at=self._clock())
            )
            if done.rowcount == 1:
                return True
            # Refunded by a reconciler that took this process for dead: debit again if the credits are there.
            debit = await conn.execute(
                api_keys.update()
                .where(
                    api_keys.c.id == reservation.key_id,
                    sa.or_(api_keys.c.credits.is_(None), api_keys.c.credits >= reservation.credits),
                )
                .values(credits=api_keys.c.credits - reservation.credits)
            )
            if debit.rowcount == 1:
                await conn.execute(
                    ledger.update()
                    .where(ledger.c.id == reservation.id, ledger.c.status.in_([REFUNDED, RECONCILED]))
                    .values(status=CHARGED, settled_at=self._clock())
                )
        charged = bool(debit.rowcount == 1)
        logger.warning("reservation %s was reconciled before it settled; charged again: %s", reservation.id, charged)
        return charged

    async def refund(self, reservation_id: str, *, status: str = REFUNDED) -> bool:
        """Give the credits back and close the row; a no-op (False) unless it is still ``reserved``."""
        async with self._store.begin() as conn:
            done: bool = await refund_in(conn, reservation_id, status=status, at=self._clock())
        return done


async def refund_in(conn: AsyncConnection, reservation_id: str, *, status: str, at: float) -> bool:
    return await close_and_refund_in(conn, reservation_id, open_status=RESERVED, status=status, at=at) is not None


async def refuse_in(conn: AsyncConnection, *, key_id: str, cost: str) -> NoReturn:
    """Why a debit was refused: the key is revoked (401), or ``cost`` exceeds its balance (402)."""
    row = (
        await conn.execute(sa.select(api_keys.c.credits, api_keys.c.revoked_at).where(api_keys.c.id == key_id))
    ).first()
    if row is None or row.revoked_at is not None:
        raise AuthenticationError("This API key has been revoked.")
    raise InsufficientQuotaError(
        f"{cost} has {_credits(row.credits or 0)} left. "
        "Ask the operator to add credits (`embedserve credits add KEY_ID N`).",
    )


async def debit_in(conn: AsyncConnection, *, key_id: str, credits: int) -> sa.Row[Any] | None:
    """Take ``credits`` from a live key that has them (or is unlimited), in one conditional UPDATE; the row with the
    new balance, or None when refused (nothing debited). Online reservations and bulk holds both debit here."""
    row: sa.Row[Any] | None = (
        await conn.execute(
            api_keys.update()
            .where(
                api_keys.c.id == key_id,
                api_keys.c.revoked_at.is_(None),
                sa.or_(api_keys.c.credits.is_(None), api_keys.c.credits >= credits),
            )
            .values(credits=api_keys.c.credits - credits)
            .returning(api_keys.c.credits)
        )
    ).first()
    return row


async def close_and_refund_in(
    conn: AsyncConnection, row_id: str, *, open_status: str, status: str, at: float
) -> int | None:
    """Close a ledger row still in ``open_status`` as ``status`` and give its credits back to the key; the credits
    refunded, or None if the row was already closed (so a refund happens once)."""
    row = (
        await conn.execute(
            ledger.update()
            .where(ledger.c.id == row_id, ledger.c.status == open_status)
            .values(status=status, settled_at=at)
            .returning(ledger.c.key_id, ledger.c.credits)
        )
    ).first()
    if row is None:
        return None
    await conn.execute(
        api_keys.update().where(api_keys.c.id == row.key_id).values(credits=api_keys.c.credits + row.credits)
    )
    return int(row.credits)
