"""Which gateway processes are alive, so reservations left ``reserved`` by a dead one can be refunded.

Each process files a row and refreshes its heartbeat. A process is dead when its heartbeat is older than the
lease, or, at once, when it ran on this kernel in this PID namespace and its PID is gone (or is ours: a
restarted container reuses PID 1). Its reservations never produced a success the client saw, so they
are refunded.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Set
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from embedserve.accounting.credits import RECONCILED, RESERVED, refund_in
from embedserve.accounting.schema import instances, ledger
from embedserve.accounting.store import Store

logger = logging.getLogger(__name__)


def pid_domain() -> str:
    """Where a PID names one process: this boot of this kernel, this PID namespace (hostname elsewhere)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink("/proc/self/ns/pid")
        return f"{boot}/{namespace}"[:200]
    except OSError:
        return f"host:{socket.gethostname()}"[:200]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class InstanceRegistry:
    def __init__(
        self,
        store: Store,
        *,
        instance_id: str,
        lease_s: float,
        clock: Callable[[], float],
        domain: str | None = None,
        pid: int | None = None,
    ) -> None:
        self._store = store
        self.instance_id = instance_id
        self._lease_s = lease_s
        self._clock = clock
        self._domain = domain if domain is not None else pid_domain()
        self._pid = pid if pid is not None else os.getpid()

    async def register(self) -> None:
        now = self._clock()
        async with self._store.begin() as conn:
            await conn.execute(instances.delete().where(instances.c.id == self.instance_id))
            await conn.execute(
                instances.insert().values(
                    id=self.instance_id, domain=self._domain, pid=self._pid, started_at=now, heartbeat_at=now
                )
            )

    async def heartbeat(self) -> None:
        async with self._store.begin() as conn:
            done = await conn.execute(
                instances.update().where(instances.c.id == self.instance_id).values(heartbeat_at=self._clock())
            )
        if done.rowcount == 0:  # taken for dead (paused past the lease): come back
            logger.warning("gateway instance %s was presumed dead; registering again", self.instance_id)
            await self.register()

    async def deregister(self) -> None:
        async with self._store.begin() as conn:
            await conn.execute(instances.delete().where(instances.c.id == self.instance_id))

    def _dead(self, row: Any) -> bool:
        if row.id == self.instance_id:
            return False
        if row.heartbeat_at < self._clock() - self._lease_s:
            return True
        return row.domain == self._domain and (row.pid == self._pid or not pid_alive(row.pid))

    async def reconcile(self) -> int:
        """Refund every reservation whose owner is dead (or unknown); returns how many were refunded."""
        async with self._store.begin() as conn:
            # Owners first: an instance registers before it reserves, so live owners are in the later read.
            owners = (
                (await conn.execute(sa.select(ledger.c.instance_id).where(ledger.c.status == RESERVED).distinct()))
                .scalars()
                .all()
            )
            rows = list(
                await conn.execute(
                    sa.select(instances.c.id, instances.c.domain, instances.c.pid, instances.c.heartbeat_at)
                )
            )
            alive = {r.id for r in rows if not self._dead(r)}
            dead = [owner for owner in owners if owner not in alive]
        refunded = 0
        for owner in dead:
            refunded += await self._reconcile_owner(owner)
        if refunded:
            logger.warning("refunded %d reservations left by stopped gateway instances", refunded)
        return refunded

    async def _reconcile_owner(
        self, owner: str, *, keep: Set[str] = frozenset(), older_than: float | None = None, forget: bool = True
    ) -> int:
        query = sa.select(ledger.c.id).where(ledger.c.instance_id == owner, ledger.c.status == RESERVED)
        if older_than is not None:
            query = query.where(ledger.c.created_at < older_than)
        async with self._store.begin() as conn:
            ids = (await conn.execute(query)).scalars().all()
            count = 0
            for reservation_id in ids:
                if reservation_id not in keep:
                    count += await refund_in(conn, reservation_id, status=RECONCILED, at=self._clock())
            if forget:
                await conn.execute(instances.delete().where(instances.c.id == owner))
        return count

    async def reconcile_own(self, *, keep: Set[str] | None = None, older_than: float | None = None) -> int:
        """Refund our own reservations that no request holds: at a clean stop all of them (none answered a success);
        while running, those older than ``older_than`` that are not in ``keep`` (the requests still in flight)."""
        if keep is None:
            return await self._reconcile_owner(self.instance_id)
        return await self._reconcile_owner(self.instance_id, keep=keep, older_than=older_than, forget=False)
