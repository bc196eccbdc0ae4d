from __future__ import annotations

import re

from embedserve.accounting.store_gateway import StoreGateway
from tests.gateway_support import make_gateway


async def test_first_start_creates_a_key_and_shows_it_once(sqlite_url: str) -> None:
    announced: list[str] = []
    first = make_gateway(sqlite_url, announced=announced)
    await first.start()
    await first.stop()
    second = make_gateway(sqlite_url, announced=announced)
    await second.start()
    try:
        assert len(announced) == 1
        secret = re.search(r"\b(es-[A-Za-z0-9_-]{32,})", announced[0])
        assert secret is not None
        assert "embedserve keys create" in announced[0]
        principal = await second.authenticate(secret.group(1))
        assert principal.name == "default"
    finally:
        await second.stop()


async def test_without_a_configured_admin_key_one_is_created_and_works(sqlite_url: str) -> None:
    announced: list[str] = []
    gw = make_gateway(sqlite_url, admin_key=None, announced=announced)
    await gw.start()
    try:
        assert len(announced) == 2
        found = re.search(r"\b(es-admin-[A-Za-z0-9_-]{32,})", announced[1])
        assert found is not None
        await gw.authenticate_admin(found.group(1))
    finally:
        await gw.stop()


async def test_no_key_is_created_when_keys_exist(gateway: StoreGateway, sqlite_url: str) -> None:
    announced: list[str] = []
    again = make_gateway(sqlite_url, announced=announced)
    await again.start()
    await again.stop()
    assert announced == []
