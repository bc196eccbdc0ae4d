"""``embedserve keys | credits | usage | db``: the operator's commands over the accounting store.

``add_subcommands`` registers them on the top-level parser; each handler takes ``(args, settings)`` and
returns the exit status. Errors are raised as ``EmbedServeError`` for the top-level CLI to print.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import dataclasses
import io
import json
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from embedserve.accounting.keys import KeyInfo, KeyRegistry
from embedserve.accounting.store import Store, database_url, head_revision
from embedserve.accounting.usage import usage_report
from embedserve.settings import Settings

Handler = Callable[[argparse.Namespace, Settings], int]


def _store(settings: Settings) -> Store:
    return Store(database_url(data_dir=settings.data_dir, database_url=settings.database_url))


def _run(settings: Settings, work: Callable[[Store], Awaitable[int]], *, check_schema: bool = True) -> int:
    async def main() -> int:
        store = _store(settings)
        try:
            if check_schema:
                await store.ensure_schema(auto_upgrade=store.is_sqlite)
            return await work(store)
        finally:
            await store.dispose()

    return asyncio.run(main())


def _limit(value: int | None) -> str:
    return "default" if value is None else ("unlimited" if value == 0 else str(value))


def key_dict(info: KeyInfo) -> dict[str, Any]:
    return dataclasses.asdict(info) | {"revoked": info.revoked}


def _emit(rows: Sequence[dict[str, Any]], *, fmt: str, columns: Sequence[str]) -> None:
    if fmt == "json":
        print(json.dumps(list(rows), indent=2))
        return
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        sys.stdout.write(buffer.getvalue())
        return
    table = [list(columns)] + [["" if r.get(c) is None else str(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    for line in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())


def _keys_create(args: argparse.Namespace, settings: Settings) -> int:
    async def work(store: Store) -> int:
        created = await KeyRegistry(store, clock=time.time).create(
            name=args.name, admin=args.admin, credits=args.credits, rpm=args.rpm, tpm=args.tpm
        )
        info = created.info
        if args.format == "json":
            print(json.dumps(key_dict(info) | {"secret": created.secret}, indent=2))
            return 0
        credits = "unlimited" if info.credits is None else str(info.credits)
        print(
            f"Created {info.kind} key {info.id} ('{info.name}'): credits {credits}, "
            f"rpm {_limit(info.rpm)}, tpm {_limit(info.tpm)}."
        )
        print("The secret is shown only this once; only its hash is stored:\n")
        print(f"    {created.secret}\n")
        return 0

    return _run(settings, work)


KEY_COLUMNS = ("id", "name", "kind", "prefix", "credits", "rpm", "tpm", "revoked")


def _keys_list(args: argparse.Namespace, settings: Settings) -> int:
    async def work(store: Store) -> int:
        keys = await KeyRegistry(store, clock=time.time).list_keys(include_revoked=not args.active)
        rows = [key_dict(k) for k in keys]
        if args.format == "table":
            for row in rows:
                row.update(credits=row["credits"] if row["credits"] is not None else "unlimited",
                           rpm=_limit(row["rpm"]), tpm=_limit(row["tpm"]))  # fmt: skip
        _emit(rows, fmt=args.format, columns=KEY_COLUMNS)
        return 0

    return _run(settings, work)


def _utc(at: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at or 0))


def _keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    async def work(store: Store) -> int:
        keys = KeyRegistry(store, clock=time.time)
        before = await keys.get(args.key_id)
        if before.revoked:
            when = _utc(before.revoked_at)
            print(f"Key {before.id} ('{before.name}') was already revoked (at {when}); nothing changed.")
            return 0
        info = await keys.revoke(args.key_id)
        print(f"Revoked key {info.id} ('{info.name}').")
        return 0

    return _run(settings, work)


def _credits_add(args: argparse.Namespace, settings: Settings) -> int:
    async def work(store: Store) -> int:
        info = await KeyRegistry(store, clock=time.time).add_credits(args.key_id, args.amount)
        floor = " (removal stops at 0)" if args.amount < 0 and info.credits == 0 else ""
        print(f"Key {info.id} ('{info.name}') now has {info.credits} credits{floor}.")
        return 0

    return _run(settings, work)


USAGE_COLUMNS = ("day", "key_id", "key_name", "requests", "inputs", "tokens", "credits")


def _usage(args: argparse.Namespace, settings: Settings) -> int:
    async def work(store: Store) -> int:
        rows = await usage_report(store, now=time.time(), days=args.days, key_id=args.key)
        _emit([dataclasses.asdict(r) for r in rows], fmt=args.format, columns=USAGE_COLUMNS)
        return 0

    return _run(settings, work)


def _db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    async def work(store: Store) -> int:
        before = await store.current_revision()
        await store.upgrade()
        print(f"Schema of {store.safe_url}: {before or 'empty'} -> {await store.current_revision()} (head).")
        return 0

    return _run(settings, work, check_schema=False)


def _db_current(args: argparse.Namespace, settings: Settings) -> int:
    async def work(store: Store) -> int:
        current = await store.current_revision()
        head = head_revision()
        state = "up to date" if current == head else "run `embedserve db upgrade`"
        print(f"{store.safe_url}: revision {current or 'none'}, head {head} ({state}).")
        return 0 if current == head else 1

    return _run(settings, work, check_schema=False)


def _store_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("store")
    group.add_argument("--data-dir", default=None, help="where the SQLite store lives")
    group.add_argument("--database-url", default=None, help="e.g. postgresql+asyncpg://user@host/db")


def _command(sub: Any, name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help_text, description=help_text)
    _store_flags(parser)
    parser.set_defaults(func=handler)
    return parser


def add_subcommands(subparsers: Any) -> None:
    """Register ``keys``, ``credits``, ``usage`` and ``db`` on the top-level ``add_subparsers()`` object."""
    keys = subparsers.add_parser("keys", help="create, list and revoke API keys").add_subparsers(
        dest="keys_command", required=True
    )
    create = _command(keys, "create", _keys_create, "create a key; its secret is printed once")
    create.add_argument("--name", required=True)
    create.add_argument("--credits", type=int, default=None, help="starting balance (default: unlimited)")
    create.add_argument("--rpm", type=int, default=None, help="requests per minute (0: unlimited)")
    create.add_argument("--tpm", type=int, default=None, help="tokens per minute (0: unlimited)")
    create.add_argument("--admin", action="store_true", help="an admin key (for /admin and /metrics)")
    create.add_argument("--format", choices=["text", "json"], default="text")
    listing = _command(keys, "list", _keys_list, "list keys (never their secrets)")
    listing.add_argument("--active", action="store_true", help="hide revoked keys")
    listing.add_argument("--format", choices=["table", "csv", "json"], default="table")
    revoke = _command(keys, "revoke", _keys_revoke, "revoke a key; it is refused from then on")
    revoke.add_argument("key_id")

    credits = subparsers.add_parser("credits", help="change a key's credit balance").add_subparsers(
        dest="credits_command", required=True
    )
    add = _command(credits, "add", _credits_add, "add N credits to a key (negative N removes; removal stops at 0)")
    add.add_argument("key_id")
    add.add_argument("amount", type=int)

    usage = _command(subparsers, "usage", _usage, "usage per key per UTC day: requests, tokens, credits")
    usage.add_argument("--format", choices=["table", "csv", "json"], default="table")
    usage.add_argument("--days", type=int, default=30)
    usage.add_argument("--key", default=None, help="only this key id")

    db = subparsers.add_parser("db", help="the accounting schema").add_subparsers(dest="db_command", required=True)
    _command(db, "upgrade", _db_upgrade, "apply the Alembic migrations up to head")
    _command(db, "current", _db_current, "show the schema revision (exit 1 if not at head)")
