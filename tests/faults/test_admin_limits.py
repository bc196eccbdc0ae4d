"""Hostile admin input and weak admin keys: a 400 naming the field, never a 500; a guessable key refused at start."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from embedserve.settings import Settings
from tests.faults.conftest import ADMIN_KEY, KeyedServer
from tests.integration.gateway.processes import cli

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/admin/keys", {"name": "big", "credits": 10**20}, "credits"),
        ("/admin/keys", {"name": "big", "rpm": 2**40}, "rpm"),
        ("/admin/keys/{key}/credits", {"amount": 10**20}, "amount"),
        ("/admin/keys/{key}/credits", {"amount": -(10**20)}, "amount"),
    ],
)
def test_huge_admin_numbers_are_a_400_naming_the_field(
    keyed_server: KeyedServer, path: str, body: dict[str, object], param: str
) -> None:
    created = httpx.post(f"{keyed_server.url}/admin/keys", json={"name": "victim", "credits": 5}, headers=ADMIN)
    url = keyed_server.url + path.format(key=created.json()["id"])
    r = httpx.post(url, json=body, headers=ADMIN, timeout=30)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


def test_a_balance_cannot_be_pushed_past_the_maximum(keyed_server: KeyedServer) -> None:
    created = httpx.post(f"{keyed_server.url}/admin/keys", json={"name": "rich", "credits": 10**15}, headers=ADMIN)
    r = httpx.post(f"{keyed_server.url}/admin/keys/{created.json()['id']}/credits", json={"amount": 1}, headers=ADMIN)
    assert r.status_code == 400 and "exceed" in r.json()["error"]["message"]


@pytest.mark.parametrize("weak", ["a", "password", "aaaaaaaaaaaaaaaaaaaaaaaaaaaa"])
def test_a_weak_admin_key_is_refused(weak: str) -> None:
    with pytest.raises(ValidationError, match="admin key must be at least 20 characters"):
        Settings(admin_key=weak)


def test_a_weak_admin_key_stops_the_server_at_start(tmp_path: Path) -> None:
    out = cli("serve", "--admin-key", "a", "--data-dir", str(tmp_path), "--backend", "fake")
    assert out.returncode == 2 and "admin key must be at least 20 characters" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and "visible to every user" in out.stderr


def test_the_admin_key_can_come_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "admin.key"
    secret.write_text(ADMIN_KEY + "\n")
    assert Settings(admin_key_file=secret).admin_key == ADMIN_KEY
    out = cli("serve", "--admin-key-file", str(tmp_path / "missing"), "--data-dir", str(tmp_path))
    assert out.returncode == 2 and "cannot read the admin key file" in out.stderr
