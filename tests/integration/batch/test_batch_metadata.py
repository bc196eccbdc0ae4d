"""Batch metadata is held to OpenAI's limits: 16 pairs, keys up to 64 characters, values up to 512."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.integration.batch.conftest import ADMIN, CREATE, bearer, jsonl, request_line


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        ({f"k{i}": "v" for i in range(17)}, "16"),
        ({"k" * 65: "v"}, "64 characters"),
        ({"k": "v" * 513}, "512 characters"),
    ],
)
async def test_metadata_over_openais_limits_is_a_400_naming_the_field(
    http: httpx.AsyncClient, metadata: dict[str, str], reason: str
) -> None:
    content = jsonl([request_line("a", {"input": "x"})])
    upload = await http.post(
        "/v1/files", files={"file": ("in.jsonl", content)}, data={"purpose": "batch"}, headers=bearer(ADMIN)
    )
    body: dict[str, Any] = {"input_file_id": upload.json()["id"], **CREATE, "metadata": metadata}
    response = await http.post("/v1/batches", json=body, headers=bearer(ADMIN))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "metadata" and reason in error["message"]


async def test_metadata_at_openais_limits_is_kept(http: httpx.AsyncClient) -> None:
    content = jsonl([request_line("a", {"input": "x"})])
    upload = await http.post(
        "/v1/files", files={"file": ("in.jsonl", content)}, data={"purpose": "batch"}, headers=bearer(ADMIN)
    )
    metadata = {f"{i:02d}" + "k" * 62: "v" * 512 for i in range(16)}
    body = {"input_file_id": upload.json()["id"], **CREATE, "metadata": metadata}
    response = await http.post("/v1/batches", json=body, headers=bearer(ADMIN))
    assert response.status_code == 200, response.text
    assert response.json()["metadata"] == metadata
