"""The gateway without a key store: everyone is let through and only priced (``--no-auth``, tests, batch CLI)."""

from __future__ import annotations

import logging

from embedserve.accounting.pricing import price
from embedserve.accounting.protocol import Admin
from embedserve.accounting.values import ANONYMOUS, Account, Admission, Principal
from embedserve.errors import NO_LIMITS, RateLimitState

logger = logging.getLogger(__name__)

NO_AUTH_WARNING = (
    "AUTHENTICATION IS OFF (--no-auth): anyone who can reach this port can use it with any bearer; "
    "no keys, credits, rate limits or usage are recorded. Do not expose this server."
)


class OpenGateway:
    """Accepts any bearer (the official SDKs refuse to start without one) and prices requests; has no admin."""

    def __init__(self, *, credits_per_1k_tokens: float = 1.0) -> None:
        self._credits_per_1k = credits_per_1k_tokens

    @property
    def admin(self) -> Admin | None:
        return None

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


class NoAuthGateway(OpenGateway):
    """``--no-auth``: the open gateway, which says so loudly when it starts."""

    async def start(self) -> None:
        logger.warning(NO_AUTH_WARNING)  # once: the server's log handler writes it to stderr
