"""Keys, credits, rate limits and the usage ledger; knows nothing of HTTP or the engine.

``build_gateway(settings)`` is the one entry point the app uses.
"""

from __future__ import annotations

import logging

from embedserve.accounting.gateway import Admission, Gateway, OpenGateway, Principal, price
from embedserve.settings import Settings

logger = logging.getLogger(__name__)

__all__ = ["Admission", "Gateway", "NoAuthGateway", "OpenGateway", "Principal", "build_gateway", "price"]

NO_AUTH_WARNING = (
    "AUTHENTICATION IS OFF (--no-auth): anyone who can reach this port can use it with any bearer; "
    "no keys, credits, rate limits or usage are recorded. Do not expose this server."
)


class NoAuthGateway(OpenGateway):
    """``--no-auth``: the open gateway, which says so loudly when it starts."""

    async def start(self) -> None:
        logger.warning(NO_AUTH_WARNING)  # once: the server's log handler writes it to stderr


def build_gateway(settings: Settings) -> Gateway:
    """The store-backed gateway (auth on, the default) or the open one (``settings.auth`` False)."""
    if not settings.auth:
        return NoAuthGateway(credits_per_1k_tokens=settings.credits_per_1k_tokens)
    from embedserve.accounting.ratelimit import Limits, RateLimiter
    from embedserve.accounting.store import Store, database_url
    from embedserve.accounting.store_gateway import StoreGateway

    url = database_url(data_dir=settings.data_dir, database_url=settings.database_url)
    return StoreGateway(
        store=Store(url, timeout_s=settings.database_timeout_seconds),
        limiter=RateLimiter(redis_url=settings.redis_url),
        credits_per_1k_tokens=settings.credits_per_1k_tokens,
        admin_key=settings.admin_key,
        default_limits=Limits(rpm=settings.default_rpm, tpm=settings.default_tpm),
        lease_s=settings.gateway_lease_seconds,
    )
