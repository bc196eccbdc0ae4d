"""Dependencies of the files and batches routes: the caller as an owner (a user key, or the admin key who sees all)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import Request

from embedserve.api.deps import bearer_token, get_gateway
from embedserve.batch.owner import Owner
from embedserve.errors import AuthenticationError, ServiceUnavailableError

if TYPE_CHECKING:
    from embedserve.batch.setup import Batches


async def get_batches(request: Request) -> Batches:
    batches: Batches | None = getattr(request.app.state, "batches", None)
    if batches is None:
        raise ServiceUnavailableError("Batch jobs are not enabled on this server.")
    await batches.ready()
    return batches


async def get_owner(request: Request) -> Owner:
    gateway = get_gateway(request)
    token = bearer_token(request)
    try:
        principal = await gateway.authenticate(token)
    except AuthenticationError:
        try:
            await gateway.authenticate_admin(token)
        except Exception:
            pass
        else:
            return Owner(key_id=None, admin=True)
        raise
    request.state.principal = principal
    return Owner(key_id=principal.key_id)
