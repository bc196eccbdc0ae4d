"""Usage reports from the ledger: per key and UTC day, charged requests with inputs, tokens and credits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from embedserve.accounting.credits import CHARGED, utc_day
from embedserve.accounting.schema import api_keys, ledger
from embedserve.accounting.store import Store


@dataclass(frozen=True, slots=True)
class UsageRow:
    day: str
    key_id: str
    key_name: str
    requests: int
    inputs: int
    tokens: int
    credits: int


async def usage_report(store: Store, *, now: float, days: int = 30, key_id: str | None = None) -> Sequence[UsageRow]:
    """Charged usage over the last ``days`` UTC days (today included), newest day first."""
    since = utc_day(now - max(0, days - 1) * 86400)
    query = (
        sa.select(
            ledger.c.day,
            ledger.c.key_id,
            sa.func.coalesce(sa.func.max(api_keys.c.name), "").label("key_name"),
            sa.func.count().label("requests"),
            sa.func.sum(ledger.c.inputs).label("inputs"),
            sa.func.sum(ledger.c.tokens).label("tokens"),
            sa.func.sum(ledger.c.credits).label("credits"),
        )
        .select_from(ledger.outerjoin(api_keys, api_keys.c.id == ledger.c.key_id))
        .where(ledger.c.status == CHARGED, ledger.c.day >= since)
        .group_by(ledger.c.day, ledger.c.key_id)
        .order_by(ledger.c.day.desc(), ledger.c.key_id)
    )
    if key_id is not None:
        query = query.where(ledger.c.key_id == key_id)
    async with store.begin() as conn:
        rows = list(await conn.execute(query))
    return [
        UsageRow(
            day=r.day,
            key_id=r.key_id,
            key_name=r.key_name,
            requests=int(r.requests),
            inputs=int(r.inputs or 0),
            tokens=int(r.tokens or 0),
            credits=int(r.credits or 0),
        )
        for r in rows
    ]
