from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from embedserve.accounting.schema import ledger
from embedserve.accounting.store_gateway import StoreGateway
from embedserve.errors import InsufficientQuotaError


async def _balance(gateway: StoreGateway, key_id: str) -> int | None:
    return (await gateway.keys.get(key_id)).credits


async def _statuses(gateway: StoreGateway) -> list[tuple[str, int]]:
    async with gateway.store.begin() as conn:
        rows = await conn.execute(sa.select(ledger.c.status, ledger.c.credits).order_by(ledger.c.created_at))
        return [(r.status, r.credits) for r in rows]


async def test_admit_reserves_then_settle_charges(gateway: StoreGateway) -> None:
    key = await gateway.keys.create(name="a", credits=10)
    principal = await gateway.authenticate(key.secret)
    admission = await gateway.admit(principal, request_id="req-1", model="bge", inputs=1, tokens=7)
    assert admission.credits == 1
    assert await _balance(gateway, key.info.id) == 9
    assert await _statuses(gateway) == [("reserved", 1)]
    await gateway.settle(admission, ok=True)
    assert await _balance(gateway, key.info.id) == 9
    assert await _statuses(gateway) == [("charged", 1)]


async def test_failed_inference_is_refunded(gateway: StoreGateway) -> None:
    key = await gateway.keys.create(name="a", credits=10)
    principal = await gateway.authenticate(key.secret)
    admission = await gateway.admit(principal, request_id="req-1", model="bge", inputs=2, tokens=2500)
    assert await _balance(gateway, key.info.id) == 7
    await gateway.settle(admission, ok=False)
    assert await _balance(gateway, key.info.id) == 10
    assert await _statuses(gateway) == [("refunded", 3)]


async def test_settling_twice_changes_nothing(gateway: StoreGateway) -> None:
    key = await gateway.keys.create(name="a", credits=10)
    principal = await gateway.authenticate(key.secret)
    admission = await gateway.admit(principal, request_id="r", model="bge", inputs=1, tokens=7)
    await gateway.settle(admission, ok=False)
    await gateway.settle(admission, ok=False)
    assert await _balance(gateway, key.info.id) == 10


async def test_too_few_credits_is_402_insufficient_quota(gateway: StoreGateway) -> None:
    key = await gateway.keys.create(name="a", credits=1)
    principal = await gateway.authenticate(key.secret)
    with pytest.raises(InsufficientQuotaError, match="costs 2 credits") as info:
        await gateway.admit(principal, request_id="r", model="bge", inputs=1, tokens=1500)
    assert (info.value.status, info.value.type, info.value.code) == (
        402,
        "insufficient_quota",
        "insufficient_quota",
    )
    assert await _balance(gateway, key.info.id) == 1
    assert await _statuses(gateway) == []


async def test_unlimited_keys_are_recorded_but_never_refused(gateway: StoreGateway) -> None:
    key = await gateway.keys.create(name="u")
    principal = await gateway.authenticate(key.secret)
    admission = await gateway.admit(principal, request_id="r", model="bge", inputs=1, tokens=10**6)
    await gateway.settle(admission, ok=True)
    assert await _balance(gateway, key.info.id) is None
    assert await _statuses(gateway) == [("charged", 1000)]


async def test_a_cancelled_settle_still_reaches_the_ledger(gateway: StoreGateway) -> None:
    key = await gateway.keys.create(name="a", credits=10)
    principal = await gateway.authenticate(key.secret)
    admission = await gateway.admit(principal, request_id="r", model="bge", inputs=1, tokens=7)
    task = asyncio.create_task(gateway.settle(admission, ok=False))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(50):
        if await _statuses(gateway) == [("refunded", 1)]:
            break
        await asyncio.sleep(0.01)
    assert await _balance(gateway, key.info.id) == 10


async def test_the_ledger_never_holds_input_text(gateway: StoreGateway) -> None:
    assert {c.name for c in ledger.columns} == {
        "id", "key_id", "request_id", "model", "inputs", "tokens", "credits", "status", "instance_id",
        "created_at", "settled_at", "day",
    }  # fmt: skip
