"""An engine at capacity makes a job's lines wait and retry: a 503 is never a line's result."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.integration.batch.conftest import finished, jsonl, request_line, upload, wait_for

TEXT = " ".join(["word"] * 40)  # 42 tokens with [CLS] and [SEP]


async def test_lines_wait_for_an_engine_at_capacity_instead_of_failing(
    make_client: Callable[..., Any], tmp_path: Path
) -> None:
    client: httpx.AsyncClient = await make_client(
        data_dir=tmp_path, batch_poll_seconds=0.05, batch_chunk_lines=3, engine={"max_queued_tokens": 600}
    )
    lines = [request_line(f"l{i}", {"input": [TEXT] * 10}) for i in range(12)]  # 420 tokens a line, 3 a chunk
    source = await upload(client, jsonl(lines))
    created = await client.post(
        "/v1/batches", json={"input_file_id": source["id"], "endpoint": "/v1/embeddings", "completion_window": "24h"}
    )
    batch = await wait_for(client, created.json()["id"], until=finished, timeout=120)
    assert batch["status"] == "completed"
    assert batch["request_counts"] == {"total": 12, "completed": 12, "failed": 0}
    assert batch["error_file_id"] is None
