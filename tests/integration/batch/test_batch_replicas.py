"""Two server processes on one PostgreSQL and one storage dir run a set of jobs: each job is claimed and run by
exactly one replica (its chunks recorded and charged once), and either replica answers for any job."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import sqlalchemy as sa

from embedserve.accounting.schema import ledger
from embedserve.accounting.store import Store
from embedserve.batch.tables import chunks
from tests.integration.gateway.processes import cli, create_key, servers

JOBS, LINES = 6, 12


async def test_two_replicas_run_each_job_once(pg_url: str, tmp_path: Path) -> None:
    store_args = ["--database-url", pg_url]
    assert cli("db", "upgrade", *store_args).returncode == 0
    key = create_key(store_args, credits=10_000)
    headers = {"Authorization": f"Bearer {key['secret']}"}
    env = {"EMBEDSERVE_DATABASE_URL": pg_url, "EMBEDSERVE_ADMIN_KEY": "adm-0123456789-abcdefgh",
           "EMBEDSERVE_BATCH_STORAGE_DIR": str(tmp_path / "shared"), "EMBEDSERVE_BATCH_CHUNK_LINES": "2",
           "EMBEDSERVE_BATCH_POLL_SECONDS": "0.05"}  # fmt: skip
    with servers(2, env=env, tmp_path=tmp_path) as (a, b):
        ids = []
        for j in range(JOBS):
            lines = [{"custom_id": f"j{j}-{i}", "method": "POST", "url": "/v1/embeddings",
                      "body": {"input": f"job {j} line {i}"}} for i in range(LINES)]  # fmt: skip
            data = b"".join(orjson.dumps(x) + b"\n" for x in lines)
            via = (a, b)[j % 2]
            up = httpx.post(f"{via.url}/v1/files", files={"file": ("in.jsonl", data)}, data={"purpose": "batch"},
                            headers=headers).json()  # fmt: skip
            made = httpx.post(f"{via.url}/v1/batches", headers=headers, json={"input_file_id": up["id"],
                              "endpoint": "/v1/embeddings", "completion_window": "24h"})  # fmt: skip
            ids.append(made.json()["id"])
        deadline = time.monotonic() + 120
        for job_id in ids:
            while (batch := httpx.get(f"{b.url}/v1/batches/{job_id}", headers=headers).json())["status"] != "completed":
                assert time.monotonic() < deadline, batch
                time.sleep(0.1)
            content = httpx.get(f"{a.url}/v1/files/{batch['output_file_id']}/content", headers=headers).content
            assert len(content.splitlines()) == LINES and batch["request_counts"]["completed"] == LINES
        logs = a.log() + b.log()
    runners = {job_id: sum(f"batch {job_id} completed" in log for log in (a.log(), b.log())) for job_id in ids}
    assert all(count == 1 for count in runners.values()), runners
    assert logs.count("completed") >= JOBS
    store = Store(pg_url)
    try:
        async with store.begin() as conn:
            per_job: dict[Any, Any] = dict(list(await conn.execute(
                sa.select(chunks.c.job_id, sa.func.count()).group_by(chunks.c.job_id))))  # fmt: skip
            charged = (await conn.execute(
                sa.select(sa.func.count()).where(ledger.c.status == "charged", ledger.c.request_id.like("batch_%")))
            ).scalar()  # fmt: skip
    finally:
        await store.dispose()
    assert per_job == {job_id: LINES // 2 for job_id in ids}
    assert charged == JOBS * LINES // 2  # one charged row per chunk: nothing settled twice
