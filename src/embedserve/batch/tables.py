"""The bulk-job tables (SQLAlchemy Core), created by migrations 0002 to 0004 in the accounting store's chain.

Times are float epoch seconds, as in the accounting tables. JSON columns (``errors``, ``metadata``) are text.
"""

from __future__ import annotations

import sqlalchemy as sa

from embedserve.accounting.schema import metadata

files = sa.Table(
    "batch_files",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("key_id", sa.String(32), nullable=True),  # NULL: made with auth off
    sa.Column("purpose", sa.String(32), nullable=False),
    sa.Column("filename", sa.String(512), nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("lines", sa.Integer, nullable=False),
    sa.Column("path", sa.String(512), nullable=False),  # relative to the storage root
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Index("ix_batch_files_key_created", "key_id", "created_at"),
)

jobs = sa.Table(
    "batch_jobs",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("key_id", sa.String(32), nullable=True),
    sa.Column("input_file_id", sa.String(64), nullable=False),
    sa.Column("endpoint", sa.String(64), nullable=False),
    sa.Column("completion_window", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("errors", sa.Text, nullable=True),
    sa.Column("metadata", sa.Text, nullable=True),
    sa.Column("model", sa.String(200), nullable=True),
    sa.Column("output_file_id", sa.String(64), nullable=True),
    sa.Column("error_file_id", sa.String(64), nullable=True),
    sa.Column("total", sa.Integer, nullable=False, server_default="0"),
    sa.Column("completed", sa.Integer, nullable=False, server_default="0"),
    sa.Column("failed", sa.Integer, nullable=False, server_default="0"),
    sa.Column("inputs_total", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("inputs_done", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("tokens_total", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("tokens_done", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("credits_total", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("credits_done", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("chunk_lines", sa.Integer, nullable=False, server_default="64"),
    sa.Column("hold_id", sa.String(36), nullable=True),
    sa.Column("credits_per_1k", sa.Float, nullable=True),  # the price held at validation, charged at run time (0004)
    sa.Column("claimed_by", sa.String(64), nullable=True),
    sa.Column("lease_until", sa.Float, nullable=True),  # also the end of a back-off after a transient failure
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),  # transient failures since progress (0003)
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("in_progress_at", sa.Float, nullable=True),
    sa.Column("finalizing_at", sa.Float, nullable=True),
    sa.Column("completed_at", sa.Float, nullable=True),
    sa.Column("failed_at", sa.Float, nullable=True),
    sa.Column("expired_at", sa.Float, nullable=True),
    sa.Column("cancelling_at", sa.Float, nullable=True),
    sa.Column("cancelled_at", sa.Float, nullable=True),
    sa.Index("ix_batch_jobs_key_created", "key_id", "created_at"),
    sa.Index("ix_batch_jobs_status", "status"),
)

chunks = sa.Table(
    "batch_chunks",
    metadata,
    sa.Column("job_id", sa.String(64), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),  # lines [seq * chunk_lines, (seq + 1) * chunk_lines)
    sa.Column("completed", sa.Integer, nullable=False),
    sa.Column("failed", sa.Integer, nullable=False),
    sa.Column("inputs", sa.BigInteger, nullable=False),
    sa.Column("tokens", sa.BigInteger, nullable=False),
    sa.Column("credits", sa.BigInteger, nullable=False),
    sa.Column("out_part", sa.String(256), nullable=True),
    sa.Column("err_part", sa.String(256), nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
)
