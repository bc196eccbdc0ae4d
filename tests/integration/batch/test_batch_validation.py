"""Every validation error: the job fails with ``errors.data[].line`` naming the bad line, or the call is refused."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.integration.batch.conftest import CREATE, finished, request_line, upload, wait_for

GOOD = request_line("ok", {"input": "fine"})


def raw(*lines: bytes | dict[str, Any]) -> bytes:
    return b"".join((x if isinstance(x, bytes) else orjson.dumps(x)) + b"\n" for x in lines)


CASES = [
    ("not_json", raw(GOOD, b"{not json"), "invalid_json_line", 2),
    ("not_an_object", raw(GOOD, b"[1, 2]"), "invalid_json_line", 2),
    ("duplicate_custom_id", raw(GOOD, request_line("ok", {"input": "again"})), "duplicate_custom_id", 2),
    ("url_not_endpoint", raw(GOOD, request_line("c", {"input": "x"}, url="/v1/chat/completions")), "invalid_url", 2),
    ("method_not_post", raw({**GOOD, "custom_id": "g", "method": "GET"}), "invalid_method", 1),
    ("no_custom_id", raw({"method": "POST", "url": "/v1/embeddings", "body": {"input": "x"}}),
     "missing_required_parameter", 1),
    ("no_body", raw({"custom_id": "b", "method": "POST", "url": "/v1/embeddings"}), "missing_required_parameter", 1),
    ("too_many_inputs", raw(request_line("a", {"input": ["1", "2"]}), request_line("b", {"input": ["3", "4"]})),
     "too_many_inputs", 2),
    ("empty_file", b"\n\n", "empty_file", 0),
]  # fmt: skip


@pytest.mark.parametrize(("name", "content", "code", "line"), CASES, ids=[c[0] for c in CASES])
async def test_a_bad_file_fails_the_batch_naming_the_line(
    make_client: Callable[..., Any], tmp_path: Path, name: str, content: bytes, code: str, line: int
) -> None:
    client: httpx.AsyncClient = await make_client(data_dir=tmp_path, batch_poll_seconds=0.05, batch_max_inputs=3)
    source = await upload(client, content)
    created = await client.post("/v1/batches", json={"input_file_id": source["id"], **CREATE})
    batch = await wait_for(client, created.json()["id"], until=finished)
    assert batch["status"] == "failed", batch
    assert batch["failed_at"] and batch["output_file_id"] is None and batch["error_file_id"] is None
    error = batch["errors"]["data"][0]
    assert (error["code"], error["line"]) == (code, line), error
    assert error["message"]
    assert batch["errors"]["object"] == "list"


async def test_upload_limits_are_refused_with_openai_errors(make_client: Callable[..., Any], tmp_path: Path) -> None:
    client: httpx.AsyncClient = await make_client(data_dir=tmp_path, batch_max_requests=2, batch_max_file_bytes=500)
    lines = raw(GOOD, request_line("b", {"input": "x"}), request_line("c", {"input": "y"}))
    too_many = await client.post("/v1/files", files={"file": ("a.jsonl", lines)}, data={"purpose": "batch"})
    assert too_many.status_code == 400 and "at most 2 requests" in too_many.json()["error"]["message"]
    big = raw(request_line("big", {"input": "x" * 600}))
    too_big = await client.post("/v1/files", files={"file": ("b.jsonl", big)}, data={"purpose": "batch"})
    assert too_big.status_code == 413 and "500 bytes" in too_big.json()["error"]["message"]
    purpose = await client.post("/v1/files", files={"file": ("c.jsonl", raw(GOOD))}, data={"purpose": "fine-tune"})
    assert purpose.status_code == 400 and purpose.json()["error"]["param"] == "purpose"
    assert (await client.get("/v1/files")).json()["data"] == []


@pytest.mark.parametrize(
    ("field", "value", "status"),
    [("endpoint", "/v1/chat/completions", 400), ("completion_window", "1h", 400), ("input_file_id", "file-nope", 404)],
)
async def test_create_refuses_bad_parameters(
    make_client: Callable[..., Any], tmp_path: Path, field: str, value: str, status: int
) -> None:
    client: httpx.AsyncClient = await make_client(data_dir=tmp_path)
    source = await upload(client, raw(GOOD))
    response = await client.post("/v1/batches", json={"input_file_id": source["id"], **CREATE, field: value})
    assert response.status_code == status, response.text
    if status == 400:
        assert response.json()["error"]["param"] == field
