"""The accounting tables (SQLAlchemy Core). Alembic migrations create them; this module is what queries use.

Times are float epoch seconds and ``day`` a UTC ``YYYY-MM-DD`` string: SQLite and PostgreSQL share one path.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # "user" or "admin"
    sa.Column("prefix", sa.String(32), nullable=False, index=True),
    sa.Column("secret_hash", sa.String(64), nullable=False),
    sa.Column("credits", sa.BigInteger, nullable=True),  # NULL: unlimited
    sa.Column("rpm", sa.Integer, nullable=True),  # NULL: server default; 0: unlimited
    sa.Column("tpm", sa.Integer, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("revoked_at", sa.Float, nullable=True),
    sa.CheckConstraint("credits IS NULL OR credits >= 0", name="ck_api_keys_credits_nonnegative"),
)

ledger = sa.Table(
    "usage_ledger",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("key_id", sa.String(32), nullable=False),
    sa.Column("request_id", sa.String(128), nullable=False),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("inputs", sa.Integer, nullable=False),
    sa.Column("tokens", sa.Integer, nullable=False),
    sa.Column("credits", sa.BigInteger, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # reserved | charged | refunded | reconciled
    sa.Column("instance_id", sa.String(36), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("settled_at", sa.Float, nullable=True),
    sa.Column("day", sa.String(10), nullable=False),
    sa.Index("ix_usage_ledger_key_day", "key_id", "day"),
    sa.Index("ix_usage_ledger_status", "status"),
)

instances = sa.Table(
    "gateway_instances",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("domain", sa.String(200), nullable=False),  # where ``pid`` means something (boot + pid namespace)
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("heartbeat_at", sa.Float, nullable=False),
)

markers = sa.Table(
    "gateway_markers",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("created_at", sa.Float, nullable=False),
)
