"""A job still running when its completion window closes ends `expired`; its lines not run go to the error file."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import httpx
import orjson

from tests.integration.batch.conftest import CREATE, finished, jsonl, request_line, upload, wait_for


async def test_a_job_past_its_window_expires_and_its_lines_not_run_are_batch_expired(
    bclient: httpx.AsyncClient,
) -> None:
    driver = bclient._transport.app.state.batches.worker.driver  # type: ignore[attr-defined]
    late = {"by": 0.0}
    driver.config = dataclasses.replace(driver.config, clock=lambda: time.time() + late["by"])
    run_many = driver.lines.run_many

    async def first_chunk_then_the_window_closes(lines: Any, **options: Any) -> Any:
        outcomes = await run_many(lines, **options)
        late["by"] = 25 * 3600.0  # past the 24 h window from the first chunk on
        return outcomes

    driver.lines.run_many = first_chunk_then_the_window_closes
    source = await upload(bclient, jsonl(request_line(f"r{i}", {"input": f"text {i}"}) for i in range(16)))
    created = await bclient.post("/v1/batches", json={"input_file_id": source["id"], **CREATE})
    batch = await wait_for(bclient, created.json()["id"], until=finished)

    assert batch["status"] == "expired" and batch["expired_at"] is not None
    ran = [orjson.loads(x) for x in (await bclient.get(f"/v1/files/{batch['output_file_id']}/content")).content.split()]
    expired = [
        orjson.loads(x) for x in (await bclient.get(f"/v1/files/{batch['error_file_id']}/content")).content.splitlines()
    ]
    assert 4 <= len(ran) < 16  # the chunks already started finish; none after the window closed starts
    assert sorted(x["custom_id"] for x in ran + expired) == sorted(f"r{i}" for i in range(16))
    for line in expired:
        assert line["response"] is None and line["error"]["code"] == "batch_expired"
    assert batch["request_counts"] == {"total": 16, "completed": len(ran), "failed": len(expired)}
