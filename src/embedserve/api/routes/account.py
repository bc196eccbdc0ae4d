"""``GET /v1/key``: the calling key's own id, name, credit balance and limits (never its secret), so a user can see
where they stand without the operator."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from embedserve.accounting.values import Principal
from embedserve.api.deps import get_gateway, get_principal
from embedserve.api.protocol import ErrorResponse

router = APIRouter(tags=["account"])


class KeyLimits(BaseModel):
    rpm: int | None = Field(description="requests per minute; null: unlimited")
    tpm: int | None = Field(description="tokens per minute; null: unlimited")


class KeyStatus(BaseModel):
    object: str = "api_key"
    id: str | None = Field(description="the key's id (what the operator's `embedserve keys` shows); null: --no-auth")
    name: str
    credits: int | None = Field(description="credits left; null: unlimited")
    limits: KeyLimits


@router.get("/v1/key", response_model=KeyStatus, responses={401: {"model": ErrorResponse}})
async def current_key(request: Request, principal: Annotated[Principal, Depends(get_principal)]) -> KeyStatus:
    """The calling key: id, name, credit balance and rate limits."""
    account = await get_gateway(request).account(principal)
    return KeyStatus(
        id=account.key_id,
        name=account.name,
        credits=account.credits,
        limits=KeyLimits(rpm=account.rpm or None, tpm=account.tpm or None),
    )
