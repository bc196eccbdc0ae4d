"""API keys: ``es-`` secrets shown once, stored as a SHA-256 hash behind a short public prefix, compared in
constant time; and the key records operators manage (create, list, revoke, add credits).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from embedserve.accounting.schema import api_keys
from embedserve.accounting.store import Store
from embedserve.errors import InvalidRequestError, NotFoundError

USER_TAG = "es-"
ADMIN_TAG = "es-admin-"
SECRET_CHARS = 43  # token_urlsafe(32): 256 random bits
PREFIX_CHARS = 8  # random characters kept in clear after the tag, to find the row
_DUMMY_HASH = hashlib.sha256(b"embedserve-no-such-key").hexdigest()


def hash_secret(secret: str) -> str:
    # The secret carries 256 random bits, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def secrets_match(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)


def new_secret(*, admin: bool = False) -> str:
    return (ADMIN_TAG if admin else USER_TAG) + secrets.token_urlsafe(32)


def public_prefix(secret: str) -> str | None:
    """The clear prefix a secret is filed under, or None when the string cannot be one of our keys."""
    tag = ADMIN_TAG if secret.startswith(ADMIN_TAG) else USER_TAG
    body = secret[len(tag) :]
    if not secret.startswith(tag) or len(body) < 32 or len(body) > 128:
        return None
    return secret[: len(tag) + PREFIX_CHARS]


@dataclass(frozen=True, slots=True)
class KeyInfo:
    id: str
    name: str
    kind: str
    prefix: str
    credits: int | None
    rpm: int | None
    tpm: int | None
    created_at: float
    revoked_at: float | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


@dataclass(frozen=True, slots=True)
class CreatedKey:
    info: KeyInfo
    secret: str


def _info(row: Any) -> KeyInfo:
    return KeyInfo(
        id=row.id,
        name=row.name,
        kind=row.kind,
        prefix=row.prefix,
        credits=row.credits,
        rpm=row.rpm,
        tpm=row.tpm,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


MAX_CREDITS = 10**15  # a balance or an amount; far under BIGINT, and exact as a JSON number in any client
MAX_PER_MINUTE = 2**31 - 1  # rpm / tpm are INTEGER columns


def _nonnegative(value: int | None, name: str, *, upper: int = MAX_CREDITS) -> None:
    if value is not None and value < 0:
        raise InvalidRequestError(f"'{name}' must be 0 or more, got {value}.", param=name)
    if value is not None and value > upper:
        raise InvalidRequestError(f"'{name}' must be at most {upper}, got {value}.", param=name)


class KeyRegistry:
    """Key records over a ``Store``: the operations shared by the CLI, the admin API and authentication."""

    def __init__(self, store: Store, *, clock: Callable[[], float]) -> None:
        self._store = store
        self._clock = clock

    def insert_statement(
        self,
        *,
        name: str,
        admin: bool = False,
        credits: int | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
    ) -> tuple[sa.Insert, str, str]:
        _nonnegative(credits, "credits")
        for value, label in ((rpm, "rpm"), (tpm, "tpm")):
            _nonnegative(value, label, upper=MAX_PER_MINUTE)
        if not name.strip() or len(name) > 200:
            raise InvalidRequestError("'name' must be 1 to 200 characters.", param="name")
        secret = new_secret(admin=admin)
        key_id = "key_" + secrets.token_hex(8)
        prefix = public_prefix(secret)
        assert prefix is not None
        stmt = api_keys.insert().values(
            id=key_id,
            name=name,
            kind="admin" if admin else "user",
            prefix=prefix,
            secret_hash=hash_secret(secret),
            credits=credits,
            rpm=rpm,
            tpm=tpm,
            created_at=self._clock(),
        )
        return stmt, key_id, secret

    async def create(
        self,
        *,
        name: str,
        admin: bool = False,
        credits: int | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
    ) -> CreatedKey:
        stmt, key_id, secret = self.insert_statement(name=name, admin=admin, credits=credits, rpm=rpm, tpm=tpm)
        async with self._store.begin() as conn:
            await conn.execute(stmt)
        return CreatedKey(info=await self.get(key_id), secret=secret)

    async def get(self, key_id: str) -> KeyInfo:
        async with self._store.begin() as conn:
            row = (await conn.execute(sa.select(api_keys).where(api_keys.c.id == key_id))).first()
        if row is None:
            raise NotFoundError(f"No API key with id '{key_id}'.", param="key_id")
        return _info(row)

    async def list_keys(self, *, include_revoked: bool = True) -> Sequence[KeyInfo]:
        query = sa.select(api_keys).order_by(api_keys.c.created_at, api_keys.c.id)
        if not include_revoked:
            query = query.where(api_keys.c.revoked_at.is_(None))
        async with self._store.begin() as conn:
            return [_info(r) for r in await conn.execute(query)]

    async def revoke(self, key_id: str) -> KeyInfo:
        async with self._store.begin() as conn:
            await conn.execute(
                api_keys.update()
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=self._clock())
            )
        return await self.get(key_id)

    async def add_credits(self, key_id: str, amount: int) -> KeyInfo:
        """Add (or, negative, remove) credits in one UPDATE; removing more than the balance stops at 0."""
        if abs(amount) > MAX_CREDITS:
            raise InvalidRequestError(f"'amount' must be between -{MAX_CREDITS} and {MAX_CREDITS}.", param="amount")
        info = await self.get(key_id)
        if info.credits is None:
            raise InvalidRequestError(f"Key '{key_id}' has unlimited credits.", param="key_id")
        new_balance = api_keys.c.credits + amount
        async with self._store.begin() as conn:
            done = await conn.execute(
                api_keys.update()
                .where(api_keys.c.id == key_id, api_keys.c.credits.is_not(None), new_balance <= MAX_CREDITS)
                .values(credits=sa.case((new_balance < 0, 0), else_=new_balance))
            )
        if done.rowcount == 0:
            raise InvalidRequestError(f"A balance may not exceed {MAX_CREDITS} credits.", param="amount")
        return await self.get(key_id)

    async def find(self, secret: str, *, kind: str) -> KeyInfo | None:
        """The key record whose hash matches ``secret`` (revoked ones included), compared in constant time."""
        prefix = public_prefix(secret)
        rows: list[Any] = []
        if prefix is not None:
            async with self._store.begin() as conn:
                query = sa.select(api_keys).where(api_keys.c.prefix == prefix, api_keys.c.kind == kind)
                rows = list(await conn.execute(query))
        found: KeyInfo | None = None
        for row in rows or [None]:
            # Always hash and compare once, so a malformed or unknown key costs the same as a wrong one.
            stored = row.secret_hash if row is not None else _DUMMY_HASH
            if secrets_match(secret, stored) and row is not None:
                found = _info(row)
        return found
