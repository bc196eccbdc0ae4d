from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from embedserve.accounting import NoAuthGateway, build_gateway
from embedserve.accounting.cli import add_subcommands
from embedserve.accounting.store_gateway import StoreGateway
from embedserve.settings import Settings


def _run(argv: list[str], settings: Settings) -> int:
    parser = argparse.ArgumentParser()
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args, settings))


def test_build_gateway_is_store_backed_by_default(tmp_path: Path) -> None:
    assert isinstance(build_gateway(Settings(data_dir=tmp_path)), StoreGateway)


async def test_no_auth_says_so_loudly_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    gateway = build_gateway(Settings(data_dir=tmp_path, auth=False))
    assert isinstance(gateway, NoAuthGateway)
    await gateway.start()
    assert [r.levelname for r in caplog.records if "AUTHENTICATION IS OFF" in r.getMessage()] == ["WARNING"]
    assert "AUTHENTICATION IS OFF" not in capsys.readouterr().out  # the log line only, not a second print
    assert (await gateway.authenticate("anything")).key_id is None


def test_cli_create_list_credit_revoke_usage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings(data_dir=tmp_path)
    assert _run(["keys", "create", "--name", "ci", "--credits", "5", "--rpm", "0", "--format", "json"], settings) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["secret"].startswith("es-") and created["credits"] == 5
    assert _run(["credits", "add", created["id"], "7"], settings) == 0
    assert "12 credits" in capsys.readouterr().out
    assert _run(["keys", "list"], settings) == 0
    table = capsys.readouterr().out
    assert created["id"] in table and "unlimited" in table and created["secret"] not in table
    assert _run(["credits", "add", created["id"], "-20"], settings) == 0
    assert "now has 0 credits (removal stops at 0)" in capsys.readouterr().out
    assert _run(["keys", "revoke", created["id"]], settings) == 0
    assert "Revoked key" in capsys.readouterr().out
    assert _run(["keys", "revoke", created["id"]], settings) == 0
    assert "was already revoked" in capsys.readouterr().out
    assert _run(["keys", "list", "--format", "json", "--active"], settings) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert _run(["usage", "--format", "csv"], settings) == 0
    assert capsys.readouterr().out == "day,key_id,key_name,requests,inputs,tokens,credits\n"
    assert _run(["db", "current"], settings) == 0
