"""The seam between a request and the accounting: who is calling, may they, and what it cost.

``Gateway`` is what the service and the API depend on. ``OpenGateway`` serves everyone (``--no-auth``) and only
prices requests; the store-backed gateway (keys, credits, limits, ledger) implements the same protocol.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from embedserve.errors import NO_LIMITS, RateLimitState


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller a bearer key resolved to. ``key_id`` is None when auth is off."""

    key_id: str | None
    name: str


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
class Admission:
    """A request let through: its reservation, and the caller's rate-limit standing every response reports."""

    principal: Principal
    request_id: str
    tokens: int
    credits: int
    reservation_id: str | None = None
    rate_limit: RateLimitState = NO_LIMITS
    credits_remaining: int | None = None  # the key's balance once this is reserved; None: unlimited or no key store


def price(tokens: int, *, credits_per_1k_tokens: float) -> int:
    """Credits for one request: ``credits_per_1k_tokens`` per started 1,000 tokens, rounded up per request."""
    if tokens <= 0 or credits_per_1k_tokens <= 0:
        return 0
    return math.ceil(tokens * credits_per_1k_tokens / 1000 - 1e-9)


class Gateway(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def ready(self) -> bool:
        """Whatever the gateway needs (its database) answers now; False tells a load balancer to stay away."""
        ...

    async def authenticate(self, bearer: str | None) -> Principal:
        """Resolve a bearer token to a principal or raise ``AuthenticationError``."""
        ...

    async def authenticate_admin(self, bearer: str | None) -> None:
        """Allow an operator (admin key) through, or raise ``AuthenticationError`` / ``PermissionDeniedError``."""
        ...

    async def admit(self, principal: Principal, *, request_id: str, model: str, inputs: int, tokens: int) -> Admission:
        """Check rate limits and reserve credits, or raise ``RateLimitExceededError`` / ``InsufficientQuotaError``."""
        ...

    async def throttle(self, principal: Principal) -> RateLimitState:
        """Count one request against the caller's requests-per-minute limit, reserving no credits and recording no
        usage (``/tokenize``, ``/decode``); returns the caller's standing or raises ``RateLimitExceededError``."""
        ...

    async def account(self, principal: Principal) -> Account:
        """The caller's own key: id, name, credit balance and limits (``GET /v1/key``)."""
        ...

    async def settle(self, admission: Admission, *, ok: bool) -> None:
        """Charge the reservation (``ok``) or refund it, and record the request in the usage ledger."""
        ...


class OpenGateway:
    """Accepts any bearer (the official SDKs refuse to start without one) and prices requests."""

    def __init__(self, *, credits_per_1k_tokens: float = 1.0) -> None:
        self._credits_per_1k = credits_per_1k_tokens

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def ready(self) -> bool:
        return True

    async def authenticate(self, bearer: str | None) -> Principal:
        return ANONYMOUS

    async def authenticate_admin(self, bearer: str | None) -> None:
        return None

    async def admit(self, principal: Principal, *, request_id: str, model: str, inputs: int, tokens: int) -> Admission:
        credits = price(tokens, credits_per_1k_tokens=self._credits_per_1k)
        return Admission(principal=principal, request_id=request_id, tokens=tokens, credits=credits)

    async def throttle(self, principal: Principal) -> RateLimitState:
        return NO_LIMITS

    async def account(self, principal: Principal) -> Account:
        return Account(key_id=None, name=principal.name, credits=None)

    async def settle(self, admission: Admission, *, ok: bool) -> None:
        return None
