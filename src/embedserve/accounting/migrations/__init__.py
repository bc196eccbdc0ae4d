"""Alembic migrations for the accounting store, shipped in the package, run by ``embedserve db upgrade``."""
