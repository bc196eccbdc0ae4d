"""FastAPI dependencies: the bearer key resolved to a principal, the admin guard, and the app's shared objects."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import Request

from embedserve.accounting.protocol import Gateway
from embedserve.accounting.values import Principal

if TYPE_CHECKING:
    from embedserve.engine.protocol import EmbeddingEngine
    from embedserve.service import EmbeddingService


def bearer_token(request: Request) -> str | None:
    """The token of ``Authorization: Bearer <token>``; None when absent or not a bearer header."""
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def request_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", ""))


def get_gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


def get_engine(request: Request) -> EmbeddingEngine:
    engine: EmbeddingEngine = request.app.state.engine
    return engine


def get_service(request: Request) -> EmbeddingService:
    service: EmbeddingService = request.app.state.service
    return service


async def get_principal(request: Request) -> Principal:
    # Normally resolved by AuthGateMiddleware before the body was read; resolved here when the app is mounted bare.
    principal = getattr(request.state, "principal", None)
    if not isinstance(principal, Principal):
        principal = await get_gateway(request).authenticate(bearer_token(request))
        request.state.principal = principal
    return principal


async def require_admin(request: Request) -> None:
    if getattr(request.state, "admin", False) is not True:
        await get_gateway(request).authenticate_admin(bearer_token(request))
