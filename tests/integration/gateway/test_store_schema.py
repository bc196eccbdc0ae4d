"""Schema versioning: Alembic migrations shipped in the package, checked at start-up."""

from __future__ import annotations

import pytest

from embedserve.accounting.store import Store, head_revision
from embedserve.errors import StoreError
from tests.gateway_support import make_gateway


async def test_postgresql_not_at_head_refuses_to_start_with_the_fix(pg_url: str) -> None:
    gateway = make_gateway(pg_url)
    with pytest.raises(StoreError, match="embedserve db upgrade"):
        await gateway.start()
    await gateway.store.dispose()


async def test_upgrade_brings_postgresql_to_head_and_is_idempotent(pg_url: str) -> None:
    store = Store(pg_url)
    try:
        assert await store.current_revision() is None
        await store.upgrade()
        await store.upgrade()
        assert await store.current_revision() == head_revision()
    finally:
        await store.dispose()


async def test_sqlite_default_is_upgraded_at_start_and_uses_wal(tmp_path: object) -> None:
    from pathlib import Path

    url = f"sqlite+aiosqlite:///{Path(str(tmp_path)) / 'embedserve.db'}"
    gateway = make_gateway(url)
    await gateway.start()
    try:
        assert await gateway.store.current_revision() == head_revision()
        async with gateway.store.engine.connect() as conn:
            mode = (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar()
        assert mode == "wal"
    finally:
        await gateway.stop()


async def test_an_unreachable_database_is_a_clear_store_error() -> None:
    gateway = make_gateway("postgresql+asyncpg://postgres@127.0.0.1:1/none")
    with pytest.raises(StoreError, match="unreachable"):
        await gateway.start()
    await gateway.store.dispose()


async def test_migrations_match_the_table_definitions(db_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    import embedserve.batch.tables  # noqa: F401  (the bulk-job tables share the accounting metadata)
    from embedserve.accounting.schema import metadata

    store = Store(db_url)
    try:
        async with store.engine.connect() as conn:
            diff = await conn.run_sync(lambda c: compare_metadata(MigrationContext.configure(c), metadata))
    finally:
        await store.dispose()
    assert diff == []
