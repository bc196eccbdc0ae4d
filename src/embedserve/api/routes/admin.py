"""``/admin``: keys and usage over HTTP, the same operations as ``embedserve keys | credits | usage``.

Guarded by the admin key (``require_admin``), never by a user key. Uses only the gateway's ``Admin`` interface,
which the store-backed gateway has (auth on) and the open one lacks.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Sequence
from typing import Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from embedserve.accounting.keys import KeyInfo
from embedserve.accounting.protocol import Admin
from embedserve.accounting.usage import UsageRow
from embedserve.api.deps import get_gateway, require_admin
from embedserve.errors import ServiceUnavailableError

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    credits: int | None = Field(default=None, ge=0, description="starting balance; null: unlimited")
    rpm: int | None = Field(default=None, ge=0, description="requests per minute; null: default, 0: unlimited")
    tpm: int | None = Field(default=None, ge=0, description="tokens per minute; null: default, 0: unlimited")
    admin: bool = False


class CreditsAdd(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: int = Field(description="credits to add; negative removes, never below 0")


class KeyOut(BaseModel):
    object: Literal["api_key"] = "api_key"
    id: str
    name: str
    kind: str
    prefix: str
    credits: int | None
    rpm: int | None
    tpm: int | None
    created_at: float
    revoked_at: float | None
    revoked: bool

    @classmethod
    def of(cls, info: KeyInfo) -> KeyOut:
        return cls(**dataclasses.asdict(info), revoked=info.revoked)


class KeyCreated(KeyOut):
    secret: str = Field(description="shown only in this response; only its hash is stored")


class KeyList(BaseModel):
    object: Literal["list"] = "list"
    data: list[KeyOut]


class UsageOut(BaseModel):
    day: str
    key_id: str
    key_name: str
    requests: int
    inputs: int
    tokens: int
    credits: int


class UsageList(BaseModel):
    object: Literal["list"] = "list"
    data: list[UsageOut]


def _admin(request: Request) -> Admin:
    admin = get_gateway(request).admin
    if admin is None:
        raise ServiceUnavailableError("The admin API needs the key store; this server runs with --no-auth.")
    return admin


@router.get("/keys")
async def list_keys(request: Request, include_revoked: bool = True) -> KeyList:
    keys = await _admin(request).list_keys(include_revoked=include_revoked)
    return KeyList(data=[KeyOut.of(k) for k in keys])


@router.post("/keys", status_code=201)
async def create_key(request: Request, body: KeyCreate) -> KeyCreated:
    created = await _admin(request).create_key(
        name=body.name, admin=body.admin, credits=body.credits, rpm=body.rpm, tpm=body.tpm
    )
    return KeyCreated(**KeyOut.of(created.info).model_dump(), secret=created.secret)


@router.get("/keys/{key_id}")
async def get_key(request: Request, key_id: str) -> KeyOut:
    return KeyOut.of(await _admin(request).get_key(key_id))


@router.delete("/keys/{key_id}")
async def delete_key(request: Request, key_id: str) -> KeyOut:
    """Revoke (keys are never deleted: the ledger keeps referring to them)."""
    return KeyOut.of(await _admin(request).revoke_key(key_id))


@router.post("/keys/{key_id}/revoke")
async def revoke_key(request: Request, key_id: str) -> KeyOut:
    return KeyOut.of(await _admin(request).revoke_key(key_id))


@router.post("/keys/{key_id}/credits")
async def add_credits(request: Request, key_id: str, body: CreditsAdd) -> KeyOut:
    return KeyOut.of(await _admin(request).add_credits(key_id, body.amount))


@router.get("/usage", response_model=None)
async def usage(
    request: Request,
    days: int = Query(default=30, ge=1, le=3660),
    key_id: str | None = None,
    format: Literal["json", "csv"] = "json",
) -> UsageList | Response:
    rows = await _admin(request).usage(days=days, key_id=key_id)
    if format == "csv":
        return Response(_csv(rows), media_type="text/csv")
    return UsageList(data=[UsageOut(**dataclasses.asdict(r)) for r in rows])


def _csv(rows: Sequence[UsageRow]) -> str:
    buffer = io.StringIO()
    fields = [f.name for f in dataclasses.fields(UsageRow)]
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(dataclasses.asdict(row))
    return buffer.getvalue()
