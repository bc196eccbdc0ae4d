from __future__ import annotations

import hashlib
import hmac
import re

import pytest
import sqlalchemy as sa

from embedserve.accounting import keys as keys_module
from embedserve.accounting.keys import hash_secret, new_secret, public_prefix, secrets_match
from embedserve.accounting.schema import api_keys
from embedserve.accounting.store_gateway import StoreGateway


def test_secret_is_es_then_at_least_32_url_safe_chars() -> None:
    secret = new_secret()
    assert re.fullmatch(r"es-[A-Za-z0-9_-]{32,}", secret)
    assert new_secret() != secret


def test_admin_secret_is_tagged_and_still_long() -> None:
    assert re.fullmatch(r"es-admin-[A-Za-z0-9_-]{32,}", new_secret(admin=True))


def test_hash_is_sha256_hex_of_the_secret() -> None:
    assert hash_secret("es-abc") == hashlib.sha256(b"es-abc").hexdigest()


@pytest.mark.parametrize(
    "candidate",
    ["", "sk-" + "a" * 43, "es-short", "es-" + "a" * 200, "Bearer es-" + "a" * 43],
)
def test_strings_that_cannot_be_keys_have_no_prefix(candidate: str) -> None:
    assert public_prefix(candidate) is None


def test_prefix_is_the_tag_and_eight_clear_characters() -> None:
    secret = new_secret()
    assert public_prefix(secret) == secret[:11]


def test_secrets_compare_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr("embedserve.accounting.keys.hmac.compare_digest", spy)
    secret = new_secret()
    assert secrets_match(secret, hash_secret(secret))
    assert not secrets_match(secret + "x", hash_secret(secret))
    assert len(calls) == 2


async def test_only_the_hash_is_stored(gateway: StoreGateway) -> None:
    created = await gateway.keys.create(name="alice", credits=10)
    async with gateway.store.begin() as conn:
        rows = [tuple(r) for r in await conn.execute(sa.select(api_keys))]
    flat = " ".join(str(v) for row in rows for v in row)
    assert created.secret not in flat
    assert hash_secret(created.secret) in flat
    assert created.info.prefix == created.secret[:11]


async def test_lookup_of_unknown_or_malformed_key_still_compares_once(
    gateway: StoreGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = keys_module.secrets_match

    def spy(secret: str, stored: str) -> bool:
        calls.append(1)
        return real(secret, stored)

    monkeypatch.setattr(keys_module, "secrets_match", spy)
    assert await gateway.keys.find("garbage", kind="user") is None
    assert await gateway.keys.find(new_secret(), kind="user") is None
    assert len(calls) == 2


async def test_list_never_returns_secrets(gateway: StoreGateway) -> None:
    created = await gateway.keys.create(name="bob")
    listed = await gateway.keys.list_keys()
    assert created.secret not in repr(listed)
    assert {k.name for k in listed} >= {"bob", "default"}


async def test_credits_removal_stops_at_zero(gateway: StoreGateway) -> None:
    created = await gateway.keys.create(name="c", credits=5)
    assert (await gateway.keys.add_credits(created.info.id, 10)).credits == 15
    assert (await gateway.keys.add_credits(created.info.id, -4)).credits == 11
    assert (await gateway.keys.add_credits(created.info.id, -100)).credits == 0  # as documented: stops at 0
    assert (await gateway.keys.add_credits(created.info.id, -1)).credits == 0


async def test_unknown_key_id_is_not_found(gateway: StoreGateway) -> None:
    from embedserve.errors import NotFoundError

    with pytest.raises(NotFoundError):
        await gateway.keys.revoke("key_nope")
