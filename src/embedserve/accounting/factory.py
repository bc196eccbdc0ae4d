"""``build_gateway(settings)``: the one place the app's gateway is constructed."""

from __future__ import annotations

from embedserve.accounting.open_gateway import NoAuthGateway
from embedserve.accounting.protocol import Gateway
from embedserve.settings import Settings


def build_gateway(settings: Settings) -> Gateway:
    """The store-backed gateway (auth on, the default) or the open one (``settings.auth`` False)."""
    if not settings.auth:
        return NoAuthGateway(credits_per_1k_tokens=settings.credits_per_1k_tokens)
    from embedserve.accounting.ratelimit import RateLimiter
    from embedserve.accounting.store import Store, database_url
    from embedserve.accounting.store_gateway import StoreGateway
    from embedserve.accounting.values import Limits

    url = database_url(data_dir=settings.data_dir, database_url=settings.database_url)
    return StoreGateway(
        store=Store(url, timeout_s=settings.database_timeout_seconds),
        limiter=RateLimiter(redis_url=settings.redis_url),
        credits_per_1k_tokens=settings.credits_per_1k_tokens,
        admin_key=settings.admin_key,
        default_limits=Limits(rpm=settings.default_rpm, tpm=settings.default_tpm),
        lease_s=settings.gateway_lease_seconds,
    )
