from __future__ import annotations

import pytest

from embedserve.accounting.keys import new_secret
from embedserve.accounting.store_gateway import StoreGateway
from embedserve.errors import AuthenticationError, PermissionDeniedError


@pytest.mark.parametrize(
    ("bearer", "message"),
    [
        (None, "didn't provide an API key"),
        ("", "didn't provide an API key"),
        ("not-a-key", "Incorrect API key"),
        ("es-tooshort", "Incorrect API key"),
        (new_secret(), "Incorrect API key"),
    ],
)
async def test_missing_malformed_and_wrong_keys_are_401(
    gateway: StoreGateway, bearer: str | None, message: str
) -> None:
    with pytest.raises(AuthenticationError, match=message) as info:
        await gateway.authenticate(bearer)
    assert (info.value.status, info.value.type, info.value.code) == (
        401,
        "invalid_request_error",
        "invalid_api_key",
    )


async def test_a_valid_key_resolves_to_its_principal(gateway: StoreGateway) -> None:
    created = await gateway.keys.create(name="alice")
    principal = await gateway.authenticate(created.secret)
    assert (principal.key_id, principal.name) == (created.info.id, "alice")


async def test_a_near_miss_of_a_valid_key_is_refused(gateway: StoreGateway) -> None:
    secret = (await gateway.keys.create(name="alice")).secret
    flipped = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    with pytest.raises(AuthenticationError):
        await gateway.authenticate(flipped)


async def test_a_revoked_key_is_401(gateway: StoreGateway) -> None:
    created = await gateway.keys.create(name="alice")
    await gateway.keys.revoke(created.info.id)
    with pytest.raises(AuthenticationError, match="revoked"):
        await gateway.authenticate(created.secret)


async def test_revoking_between_auth_and_admit_refuses_the_request(gateway: StoreGateway) -> None:
    created = await gateway.keys.create(name="alice", credits=10)
    principal = await gateway.authenticate(created.secret)
    await gateway.keys.revoke(created.info.id)
    with pytest.raises(AuthenticationError):
        await gateway.admit(principal, request_id="r", model="m", inputs=1, tokens=7)


async def test_admin_key_from_settings_passes_admin_auth(gateway: StoreGateway) -> None:
    await gateway.authenticate_admin("test-admin-key")


async def test_a_user_key_on_admin_routes_is_403(gateway: StoreGateway) -> None:
    created = await gateway.keys.create(name="alice")
    with pytest.raises(PermissionDeniedError):
        await gateway.authenticate_admin(created.secret)


@pytest.mark.parametrize("bearer", [None, "wrong", new_secret(admin=True)])
async def test_missing_or_wrong_admin_key_is_401(gateway: StoreGateway, bearer: str | None) -> None:
    with pytest.raises(AuthenticationError):
        await gateway.authenticate_admin(bearer)


async def test_the_admin_key_is_not_a_user_key(gateway: StoreGateway) -> None:
    admin = await gateway.keys.create(name="ops", admin=True)
    await gateway.authenticate_admin(admin.secret)
    with pytest.raises(AuthenticationError):
        await gateway.authenticate(admin.secret)
    await gateway.keys.revoke(admin.info.id)
    with pytest.raises(AuthenticationError):
        await gateway.authenticate_admin(admin.secret)
