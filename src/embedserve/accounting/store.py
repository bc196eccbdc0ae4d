"""The accounting database: one SQLAlchemy Core async engine, SQLite (default, WAL) or PostgreSQL (asyncpg).

Also the schema version check and ``upgrade`` (Alembic, run in-process on the store's own connection).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from embedserve.errors import StoreError, StoreUnavailableError

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
SQLITE_FILENAME = "embedserve.db"
DEFAULT_TIMEOUT_S = 5.0


def database_url(*, data_dir: Path, database_url: str | None) -> str:
    """The configured URL, or the SQLite file in the data dir (created if missing)."""
    if database_url:
        return database_url
    data_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite+aiosqlite:///{data_dir / SQLITE_FILENAME}"


def _alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let the "begin" hook issue BEGIN IMMEDIATE: writers queue on the busy timeout instead of failing
    # with SQLITE_BUSY when a deferred transaction tries to upgrade its lock.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _on_sqlite_begin(conn: sa.Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def is_unavailable(exc: BaseException) -> bool:
    """A database that is down, frozen or unreachable (as opposed to a query or constraint error)."""
    if isinstance(exc, TimeoutError | OSError | sa.exc.TimeoutError):
        return True
    if isinstance(exc, sa.exc.DBAPIError):
        if exc.connection_invalidated or isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError):
            return True
        return _connection_sqlstate(exc)
    return False


def _connection_sqlstate(exc: BaseException) -> bool:
    """SQLSTATE class 08 (connection exception) or 57P (shutting down, starting up) anywhere in the cause chain."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        state = getattr(seen, "sqlstate", None) or getattr(getattr(seen, "orig", None), "sqlstate", None)
        if isinstance(state, str) and (state.startswith("08") or state.startswith("57P")):
            return True
        seen = seen.__cause__
    return False


class Store:
    """Owns the async engine; ``begin()`` yields a connection inside one transaction, bounded in time.

    Every connect, statement and pool wait on PostgreSQL is bounded by ``timeout_s`` (and a whole transaction by
    three times that), so a stopped or frozen database costs a request seconds, not minutes: it fails with
    ``StoreUnavailableError`` (a 503 with a retry delay) and ``available`` turns False until a transaction succeeds
    again.
    """

    def __init__(self, url: str, *, pool_size: int = 10, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self.available = True
        kwargs: dict[str, Any] = {"pool_pre_ping": True}
        if self.is_sqlite:
            kwargs["connect_args"] = {"timeout": 30}  # writers queue on SQLite's lock: its own bound applies
            self.timeout_s = 30.0
        else:
            self.timeout_s = timeout_s
            kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_timeout=timeout_s)
            if url.startswith("postgresql+asyncpg"):
                ms = str(int(timeout_s * 1000))
                # Server side too: a replica frozen (SIGSTOP) inside a transaction would hold its row locks, and so
                # stall every other replica on that key, until PostgreSQL ends its idle transaction.
                server = {"idle_in_transaction_session_timeout": ms, "statement_timeout": ms, "lock_timeout": ms}
                kwargs["connect_args"] = {"timeout": timeout_s, "command_timeout": timeout_s, "server_settings": server}
        try:
            self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        except Exception as exc:  # bad URL or missing driver
            raise StoreError(f"Cannot use database URL {self.safe_url}: {exc}") from exc
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _on_sqlite_connect)
            event.listen(self.engine.sync_engine, "begin", _on_sqlite_begin)

    @property
    def safe_url(self) -> str:
        return sa.make_url(self.url).render_as_string(hide_password=True)

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with asyncio.timeout(self.timeout_s * 3), self.engine.begin() as conn:
                yield conn
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            if self.available:
                logger.warning("accounting database %s unavailable: %s", self.safe_url, type(exc).__name__)
            self.available = False
            raise StoreUnavailableError(
                "The accounting database is unavailable; nothing was charged. Retry after the delay given."
            ) from exc
        if not self.available:
            logger.warning("accounting database %s reachable again", self.safe_url)
        self.available = True

    async def ping(self) -> bool:
        """One trivial transaction; False (and ``available`` False) when the database does not answer."""
        try:
            async with self.begin() as conn:
                await conn.execute(sa.text("SELECT 1"))
        except StoreUnavailableError:
            return False
        return True

    async def dispose(self) -> None:
        await self.engine.dispose()

    async def current_revision(self) -> str | None:
        async with self.engine.connect() as conn:
            return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())

    async def upgrade(self, revision: str = "head") -> None:
        def run(sync_conn: sa.Connection) -> None:
            cfg = _alembic_config()
            cfg.attributes["connection"] = sync_conn
            command.upgrade(cfg, revision)

        async with self.engine.begin() as conn:
            await conn.run_sync(run)

    async def ensure_schema(self, *, auto_upgrade: bool) -> None:
        """Upgrade (SQLite default) or check that the schema is at head, with an operator-facing error."""
        try:
            current = await self.current_revision()
            head = head_revision()
            if current == head:
                return
            if auto_upgrade:
                logger.info("upgrading accounting schema %s -> %s at %s", current, head, self.safe_url)
                await self.upgrade()
                return
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"The accounting database at {self.safe_url} is unreachable: {exc}") from exc
        raise StoreError(
            f"The accounting database at {self.safe_url} is at schema revision {current or 'none'}, "
            f"this embedserve needs {head}. Run `embedserve db upgrade --database-url ...` first."
        )
