"""Fault-suite fixtures: real ``embedserve serve`` processes (fake backend on the bge tokenizer, exact token counts)
with a real store, and the attack helpers of ``benchmarks/`` loaded as modules."""

from __future__ import annotations

import importlib.util
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import asyncpg
import pytest

from tests.faults.services import PrivatePostgres, PrivateRedis
from tests.gateway_support import upgraded
from tests.integration.gateway.processes import Server, create_key, start_server
from tests.paths import REPO
from tests.serverproc import free_port

ADMIN_KEY = "es-admin-" + "f" * 43


def benchmark_module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class KeyedServer:
    server: Server
    secret: str
    key_id: str
    data_dir: Path

    @property
    def url(self) -> str:
        return self.server.url


@contextmanager
def keyed_server_with(tmp: Path, env: dict[str, str] | None = None, **key_options: int) -> Iterator[KeyedServer]:
    """A SQLite-backed server (fake backend) and a key (unlimited credits unless given)."""
    data = tmp / "data"
    key = create_key(["--data-dir", str(data)], **key_options)
    full_env = {"EMBEDSERVE_DATA_DIR": str(data), "EMBEDSERVE_ADMIN_KEY": ADMIN_KEY, **(env or {})}
    server = start_server(port=free_port(), env=full_env, log_path=tmp / "server.log")
    try:
        yield KeyedServer(server=server, secret=key["secret"], key_id=key["id"], data_dir=data)
    finally:
        server.stop()


HEADER_TIMEOUT = 2
MAX_CONNECTIONS = 40
KEYED_CREDITS = 10**12


@pytest.fixture(scope="session")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyedServer]:
    """One SQLite-backed server for the session's fast fault tests (short header timeout, low connection cap), and a
    key with ``KEYED_CREDITS`` credits."""
    env = {"EMBEDSERVE_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT), "EMBEDSERVE_MAX_CONNECTIONS": str(MAX_CONNECTIONS)}
    with keyed_server_with(tmp_path_factory.mktemp("faults"), env, credits=KEYED_CREDITS) as server:
        yield server


@pytest.fixture(scope="session")
def private_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivatePostgres]:
    """A PostgreSQL cluster of our own (initdb + pg_ctl on a free port), which tests may stop and freeze."""
    if not PrivatePostgres.available():
        pytest.skip("PostgreSQL server binaries (/usr/lib/postgresql/*/bin) are not installed")
    # Not under pytest's root-only temporary tree: the postgres user must be able to reach its data directory.
    pg = PrivatePostgres(root=Path(tempfile.mkdtemp(prefix="embedserve-faults-pg-")))
    pg.init()
    try:
        yield pg
    finally:
        pg.destroy()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    if not PrivateRedis.available():
        pytest.skip("redis-server is not installed")
    redis = PrivateRedis(root=tmp_path / "redis")
    redis.start()
    try:
        yield redis
    finally:
        redis.thaw() if redis.proc and redis.proc.poll() is None else None
        redis.stop()


@pytest.fixture
async def pg_db(private_pg: PrivatePostgres) -> AsyncIterator[str]:
    name = f"faults_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(private_pg.dsn())
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = private_pg.url(name)
    await upgraded(url)
    yield url
