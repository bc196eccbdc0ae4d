from __future__ import annotations

import sqlalchemy as sa

from embedserve.accounting.instances import InstanceRegistry
from embedserve.accounting.schema import instances, ledger
from embedserve.accounting.store_gateway import StoreGateway
from tests.gateway_support import make_gateway
from tests.unit.accounting.conftest import FakeClock

DEAD_PID = 2**22 + 12345  # above the default pid_max: no process has it


async def _reserve_as(gateway: StoreGateway, other: InstanceRegistry, secret: str, *, tokens: int) -> None:
    """A reservation filed by another (soon dead) instance."""
    await other.register()
    principal = await gateway.authenticate(secret)
    admission = await gateway.admit(principal, request_id="r", model="m", inputs=1, tokens=tokens)
    assert admission.reservation is not None
    reservation_id: str = admission.reservation.id
    async with gateway.store.begin() as conn:
        await conn.execute(ledger.update().where(ledger.c.id == reservation_id).values(instance_id=other.instance_id))


async def _statuses(gateway: StoreGateway) -> list[str]:
    async with gateway.store.begin() as conn:
        return list((await conn.execute(sa.select(ledger.c.status))).scalars())


async def test_reservations_of_a_crashed_local_process_are_refunded_at_once(
    gateway: StoreGateway, clock: FakeClock
) -> None:
    key = await gateway.keys.create(name="a", credits=10)
    dead = InstanceRegistry(gateway.store, instance_id="dead-one", lease_s=30, clock=clock, pid=DEAD_PID)
    await _reserve_as(gateway, dead, key.secret, tokens=3000)
    assert (await gateway.keys.get(key.info.id)).credits == 7
    assert await gateway.instances.reconcile() == 1
    assert (await gateway.keys.get(key.info.id)).credits == 10
    assert await _statuses(gateway) == ["reconciled"]


async def test_a_live_replica_keeps_its_reservations_until_its_lease_expires(
    gateway: StoreGateway, clock: FakeClock
) -> None:
    key = await gateway.keys.create(name="a", credits=10)
    remote = InstanceRegistry(
        gateway.store, instance_id="remote", lease_s=30, clock=clock, domain="elsewhere", pid=DEAD_PID
    )
    await _reserve_as(gateway, remote, key.secret, tokens=1000)
    assert await gateway.instances.reconcile() == 0
    clock.advance(20)
    await remote.heartbeat()
    clock.advance(20)
    assert await gateway.instances.reconcile() == 0
    clock.advance(31)
    assert await gateway.instances.reconcile() == 1
    assert (await gateway.keys.get(key.info.id)).credits == 10


async def test_start_up_reconciles_and_a_settle_after_reconcile_charges_once(sqlite_url: str, clock: FakeClock) -> None:
    first = make_gateway(sqlite_url, clock=clock)
    await first.start()
    key = await first.keys.create(name="a", credits=5)
    admission = await first.admit(await first.authenticate(key.secret), request_id="r", model="m", inputs=1, tokens=7)
    # Simulate kill -9: no stop(); the next process gets our pid, as a restarted container does.
    assert first._task is not None
    first._task.cancel()
    second = make_gateway(sqlite_url, clock=clock)
    await second.start()
    try:
        assert (await second.keys.get(key.info.id)).credits == 5
        assert await _statuses(second) == ["reconciled"]
        async with second.store.begin() as conn:
            ids = set((await conn.execute(sa.select(instances.c.id))).scalars())
        assert ids == {second.instance_id}
        # If the presumed-dead process was only paused and settles now, it is charged exactly once.
        await first.settle(admission, ok=True)
        assert (await second.keys.get(key.info.id)).credits == 4
        assert await _statuses(second) == ["charged"]
    finally:
        await second.stop()
        await first.store.dispose()


async def test_a_clean_stop_leaves_nothing_reserved(sqlite_url: str, clock: FakeClock) -> None:
    gw = make_gateway(sqlite_url, clock=clock)
    await gw.start()
    key = await gw.keys.create(name="a", credits=5)
    await gw.admit(await gw.authenticate(key.secret), request_id="r", model="m", inputs=1, tokens=7)
    await gw.stop()
    again = make_gateway(sqlite_url, clock=clock)
    await again.start()
    try:
        assert await _statuses(again) == ["reconciled"]
        assert (await again.keys.get(key.info.id)).credits == 5
    finally:
        await again.stop()
