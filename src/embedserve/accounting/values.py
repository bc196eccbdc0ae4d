"""The values that cross the accounting seam: who is calling, their limits, and a request let through."""

from __future__ import annotations

from dataclasses import dataclass

from embedserve.errors import NO_LIMITS, RateLimitState


@dataclass(frozen=True, slots=True)
class Limits:
    """A key's per-minute limits; None or 0: unlimited."""

    rpm: int | None = None
    tpm: int | None = None


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller a bearer key resolved to. ``key_id`` is None when auth is off; ``limits`` are the key's own or
    the server's defaults, as read when the key was authenticated (None: not known, read them again)."""

    key_id: str | None
    name: str
    limits: Limits | None = None


ANONYMOUS = Principal(key_id=None, name="anonymous")


@dataclass(frozen=True, slots=True)
class Account:
    """What a caller may know about its own key (never its secret): balance and limits; None means unlimited."""

    key_id: str | None
    name: str
    credits: int | None
    rpm: int | None = None
    tpm: int | None = None


@dataclass(frozen=True, slots=True)
class Reservation:
    """Credits held in the ledger for one request until it settles."""

    id: str
    key_id: str
    credits: int
    balance_after: int | None = None  # the key's credits once this is reserved; None: unlimited


@dataclass(frozen=True, slots=True)
class Admission:
    """A request let through: its reservation (None: nothing held), and the caller's rate-limit standing."""

    principal: Principal
    request_id: str
    tokens: int
    credits: int
    reservation: Reservation | None = None
    rate_limit: RateLimitState = NO_LIMITS

    @property
    def credits_remaining(self) -> int | None:
        """The key's balance once this is reserved; None: unlimited or no key store."""
        return None if self.reservation is None else self.reservation.balance_after
