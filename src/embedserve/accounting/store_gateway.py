"""``StoreGateway``: the ``Gateway`` backed by the key store, the credit ledger and the rate limiter.

Its background loop heartbeats this process, reconciles peers taken for dead and retries settlements the database
refused. ``admin`` is a ``StoreAdmin`` over the same store.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import uuid
from collections.abc import Callable

from embedserve.accounting.admin import StoreAdmin
from embedserve.accounting.bootstrap import ADMIN_NOTICE, USER_NOTICE, announce_stderr, create_first_key
from embedserve.accounting.credits import CreditLedger
from embedserve.accounting.instances import InstanceRegistry
from embedserve.accounting.keys import KeyInfo, KeyRegistry, hash_secret
from embedserve.accounting.pricing import price
from embedserve.accounting.ratelimit import RateLimiter
from embedserve.accounting.store import Store
from embedserve.accounting.values import Account, Admission, Limits, Principal, Reservation
from embedserve.errors import (
    AuthenticationError,
    InsufficientQuotaError,
    PermissionDeniedError,
    RateLimitState,
    StoreUnavailableError,
)

logger = logging.getLogger(__name__)

SETTLE_RETRY_S = 1.0


class StoreGateway:
    def __init__(
        self,
        *,
        store: Store,
        limiter: RateLimiter,
        credits_per_1k_tokens: float,
        admin_key: str | None = None,
        default_limits: Limits | None = None,
        lease_s: float = 30.0,
        clock: Callable[[], float] = time.time,
        announce: Callable[[str], None] = announce_stderr,
    ) -> None:
        self.store = store
        self.limiter = limiter
        self.instance_id = str(uuid.uuid4())
        self.keys = KeyRegistry(store, clock=clock)
        self.ledger = CreditLedger(store, instance_id=self.instance_id, clock=clock)
        self.instances = InstanceRegistry(store, instance_id=self.instance_id, lease_s=lease_s, clock=clock)
        self.clock = clock
        self._admin = StoreAdmin(store=store, keys=self.keys, clock=clock)
        self._credits_per_1k = credits_per_1k_tokens
        self._admin_hash = hash_secret(admin_key) if admin_key else None
        self._defaults = default_limits or Limits()
        self._lease_s = lease_s
        self._announce = announce
        self._task: asyncio.Task[None] | None = None
        self._in_flight: set[str] = set()  # reservations admitted here and not settled yet
        self._unsettled: dict[str, tuple[Reservation, bool]] = {}  # settlements the database refused, retried

    @property
    def admin(self) -> StoreAdmin:
        return self._admin

    async def start(self) -> None:
        # SQLite is the single-host default: bring it to head. A shared PostgreSQL is upgraded by the operator.
        await self.store.ensure_schema(auto_upgrade=self.store.is_sqlite)
        await self.instances.register()
        await self.instances.reconcile()
        secret = await create_first_key(self.store, self.keys, admin=False, clock=self.clock)
        if secret:
            self._announce(USER_NOTICE.format(secret=secret))
        if self._admin_hash is None:
            secret = await create_first_key(self.store, self.keys, admin=True, clock=self.clock)
            if secret:
                self._announce(ADMIN_NOTICE.format(secret=secret))
        self._task = asyncio.create_task(self._keep_alive(), name="embedserve-gateway-heartbeat")

    async def _keep_alive(self) -> None:
        """Retry deferred settlements every second; heartbeat, reconcile peers and sweep our own every lease/3."""
        beat = time.monotonic()
        while True:
            await asyncio.sleep(min(SETTLE_RETRY_S, self._lease_s / 3))
            try:
                await self._retry_settlements()
                if time.monotonic() - beat >= self._lease_s / 3:
                    beat = time.monotonic()
                    await self.instances.heartbeat()
                    await self.instances.reconcile()
                    await self._sweep_own()
            except StoreUnavailableError:
                pass  # logged once by the store when it went away; retried on the next tick
            except Exception:
                logger.exception("gateway heartbeat failed")

    async def _retry_settlements(self) -> None:
        for reservation_id, (reservation, ok) in list(self._unsettled.items()):
            if ok:
                await self.ledger.commit(reservation)
            else:
                await self.ledger.refund(reservation_id)
            del self._unsettled[reservation_id]
            logger.info("deferred settlement of reservation %s written (charged: %s)", reservation_id, ok)

    async def _sweep_own(self) -> None:
        """Our own reservations that no request of ours holds any more (and older than the lease) are refunded."""
        keep = self._in_flight | set(self._unsettled)
        swept = await self.instances.reconcile_own(keep=keep, older_than=self.clock() - self._lease_s)
        if swept:
            logger.warning("refunded %d stale reservations of this process", swept)

    async def ready(self) -> bool:
        """The database answers (one bounded round trip); a load balancer should stop sending traffic if not."""
        return await self.store.ping()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            # Bounded: a cancellation swallowed inside a database driver must not hang the server's shutdown.
            await asyncio.wait({self._task}, timeout=10.0)
            self._task = None
        try:
            await self._retry_settlements()
            await self.instances.deregister()
            await self.instances.reconcile_own()
        except StoreUnavailableError:
            logger.warning(
                "the database is unavailable at stop: %d settlements unwritten; a peer (or the next start) "
                "refunds what this process left reserved",
                len(self._unsettled),
            )
        finally:
            try:
                await self.limiter.aclose()
            finally:
                await self.store.dispose()

    async def authenticate(self, bearer: str | None) -> Principal:
        if not bearer:
            raise AuthenticationError(
                "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'; "
                "the server operator can create one with `embedserve keys create`."
            )
        info = await self.keys.find(bearer, kind="user")
        if info is None:
            raise AuthenticationError("Incorrect API key provided.")
        if info.revoked:
            raise AuthenticationError("This API key has been revoked.")
        return Principal(key_id=info.id, name=info.name, limits=self._limits_of(info))

    async def authenticate_admin(self, bearer: str | None) -> None:
        if not bearer:
            raise AuthenticationError("This route needs the admin key: send 'Authorization: Bearer <admin key>'.")
        if self._admin_hash is not None and hmac.compare_digest(hash_secret(bearer), self._admin_hash):
            return
        admin = await self.keys.find(bearer, kind="admin")
        if admin is not None and not admin.revoked:
            return
        if await self.keys.find(bearer, kind="user") is not None:
            raise PermissionDeniedError("This route needs the admin key; a user API key is not accepted here.")
        raise AuthenticationError("Incorrect admin key provided.")

    def _limits_of(self, info: KeyInfo) -> Limits:
        return Limits(
            rpm=self._defaults.rpm if info.rpm is None else info.rpm,
            tpm=self._defaults.tpm if info.tpm is None else info.tpm,
        )

    async def admit(self, principal: Principal, *, request_id: str, model: str, inputs: int, tokens: int) -> Admission:
        if principal.key_id is None:
            raise AuthenticationError("This request has no API key.")
        key_id = principal.key_id
        limits = principal.limits or self._limits_of(await self.keys.get(key_id))
        rate_limit = await self.limiter.acquire(key_id, limits, tokens=tokens)
        credits = price(tokens, credits_per_1k_tokens=self._credits_per_1k)
        try:
            reservation = await self.ledger.reserve(
                key_id=key_id,
                request_id=request_id,
                model=model,
                inputs=inputs,
                tokens=tokens,
                credits=credits,
            )
        except InsufficientQuotaError as exc:
            exc.rate_limit = rate_limit
            raise
        self._in_flight.add(reservation.id)
        return Admission(
            principal=principal,
            request_id=request_id,
            tokens=tokens,
            credits=credits,
            reservation=reservation,
            rate_limit=rate_limit,
        )

    async def account(self, principal: Principal) -> Account:
        if principal.key_id is None:
            raise AuthenticationError("This request has no API key.")
        info = await self.keys.get(principal.key_id)
        limits = self._limits_of(info)
        return Account(key_id=info.id, name=info.name, credits=info.credits, rpm=limits.rpm, tpm=limits.tpm)

    async def throttle(self, principal: Principal) -> RateLimitState:
        if principal.key_id is None:
            raise AuthenticationError("This request has no API key.")
        key_id = principal.key_id
        limits = principal.limits or self._limits_of(await self.keys.get(key_id))
        return await self.limiter.acquire(key_id, Limits(rpm=limits.rpm), tokens=0)

    async def settle(self, admission: Admission, *, ok: bool) -> None:
        reservation = admission.reservation
        if reservation is None:
            return
        # Shielded here (callers need not): a client that goes away cancels the request task, but the ledger write
        # must finish.
        charged = await asyncio.shield(self._settle_or_defer(reservation, ok=ok))
        if ok and not charged:
            # Fenced: our reservation was reconciled away (this process was taken for dead) and the key cannot pay
            # again, so the result must not be sent.
            raise InsufficientQuotaError(
                f"This request's reservation of {admission.credits} credits lapsed while this server was "
                "unresponsive, and your key no longer has the credits to pay for it; nothing was charged."
            )

    async def _settle_or_defer(self, reservation: Reservation, *, ok: bool) -> bool:
        """Commit or refund; if the database is unavailable, keep it for the retry loop (the charge stands)."""
        try:
            if ok:
                return await self.ledger.commit(reservation)
            await self.ledger.refund(reservation.id)
            return False
        except StoreUnavailableError:
            self._unsettled[reservation.id] = (reservation, ok)
            logger.warning("settlement of reservation %s deferred: the database is unavailable", reservation.id)
            return ok  # a charge's credits were debited at reservation: the result is paid for
        finally:
            self._in_flight.discard(reservation.id)
