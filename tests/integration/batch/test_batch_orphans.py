"""No bytes are left on disk for good: a failed record insert removes its upload, a restart sweeps finished jobs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from embedserve.batch.files import FileStore
from tests.integration.batch.conftest import CREATE, finished, jsonl, request_line, upload, wait_for


async def test_an_upload_whose_record_cannot_be_filed_leaves_no_bytes(
    bclient: httpx.AsyncClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def refused(self: FileStore, record: Any, conn: Any = None) -> None:
        raise RuntimeError("the store refused the insert")

    monkeypatch.setattr(FileStore, "file_record", refused)
    content = jsonl([request_line("a", {"input": "x"})])
    response = await bclient.post("/v1/files", files={"file": ("in.jsonl", content)}, data={"purpose": "batch"})
    assert response.status_code == 500
    assert [p.name for p in (tmp_path / "files" / "files").iterdir()] == []


async def test_a_restart_removes_the_parts_left_by_a_job_that_finished(
    make_client: Callable[..., Any], tmp_path: Path
) -> None:
    client = await make_client(data_dir=tmp_path, batch_poll_seconds=0.05)
    source = await upload(client, jsonl([request_line("a", {"input": "x"})]))
    created = await client.post("/v1/batches", json={"input_file_id": source["id"], **CREATE})
    batch = await wait_for(client, created.json()["id"], until=finished)
    assert batch["status"] == "completed"
    jobs = tmp_path / "files" / "jobs"
    for job_id in (batch["id"], "batch_unknown"):  # as a crash after the job's last commit leaves them
        (jobs / job_id).mkdir(parents=True)
        (jobs / job_id / "0000000-x.out").write_bytes(b"{}\n")
    restarted = await make_client(data_dir=tmp_path, batch_poll_seconds=0.05)
    assert (await restarted.get("/v1/files")).status_code == 200
    assert list(jobs.iterdir()) == []
