"""The seam between a request and the accounting: who is calling, may they, and what it cost.

``Gateway`` is what the service and the API depend on; ``Admin`` is what ``/admin`` depends on (keys and usage).
``open_gateway.OpenGateway`` serves everyone (``--no-auth``) and has no admin; ``store_gateway.StoreGateway``
(keys, credits, limits, ledger) has both. ``factory.build_gateway`` picks one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from embedserve.accounting.values import Account, Admission, Principal
from embedserve.errors import RateLimitState

if TYPE_CHECKING:  # the database modules load only with the store-backed gateway
    from embedserve.accounting.keys import CreatedKey, KeyInfo
    from embedserve.accounting.usage import UsageRow


class Admin(Protocol):
    """Operator actions on keys and usage: ``/admin`` over HTTP (``embedserve keys | credits | usage`` offline)."""

    async def list_keys(self, *, include_revoked: bool) -> Sequence[KeyInfo]: ...

    async def create_key(
        self, *, name: str, admin: bool, credits: int | None, rpm: int | None, tpm: int | None
    ) -> CreatedKey: ...

    async def get_key(self, key_id: str) -> KeyInfo: ...

    async def revoke_key(self, key_id: str) -> KeyInfo: ...

    async def add_credits(self, key_id: str, amount: int) -> KeyInfo: ...

    async def usage(self, *, days: int, key_id: str | None) -> Sequence[UsageRow]: ...


class Gateway(Protocol):
    @property
    def admin(self) -> Admin | None:
        """The operator interface, or None when there is no key store (``--no-auth``)."""
        ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def ready(self) -> bool:
        """Whatever the gateway needs (its database) answers now; False tells a load balancer to stay away."""
        ...

    async def authenticate(self, bearer: str | None) -> Principal:
        """Resolve a bearer token to a principal (with its limits) or raise ``AuthenticationError``."""
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
        """Commit the reservation (``ok``) or refund it. The ledger write finishes even if the caller is cancelled
        (the gateway shields it; callers need not)."""
        ...
