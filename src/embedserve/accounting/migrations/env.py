"""Alembic environment: runs on the connection ``embedserve.accounting.store`` hands it (online only)."""

from __future__ import annotations

from alembic import context

from embedserve.accounting.schema import metadata
from embedserve.batch import tables as _batch_tables  # noqa: F401  (bulk-job tables share the metadata)

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `embedserve db upgrade`, which supplies the connection")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
