"""The admin key makes files and batches as well as it sees them (the docs promise it sees everything)."""

from __future__ import annotations

import httpx

from tests.integration.batch.conftest import ADMIN, CREATE, bearer, finished, jsonl, request_line, wait_for


async def test_the_admin_key_uploads_a_file_and_creates_a_batch(http: httpx.AsyncClient) -> None:
    content = jsonl([request_line("a", {"input": "x"})])
    upload = await http.post(
        "/v1/files", files={"file": ("in.jsonl", content)}, data={"purpose": "batch"}, headers=bearer(ADMIN)
    )
    assert upload.status_code == 200, upload.text
    created = await http.post(
        "/v1/batches", json={"input_file_id": upload.json()["id"], **CREATE}, headers=bearer(ADMIN)
    )
    assert created.status_code == 200, created.text
    batch = await wait_for(http, created.json()["id"], until=finished, headers=bearer(ADMIN))
    assert batch["status"] == "completed"


async def test_a_wrong_key_still_gets_401_on_upload(http: httpx.AsyncClient) -> None:
    content = jsonl([request_line("a", {"input": "x"})])
    response = await http.post(
        "/v1/files", files={"file": ("in.jsonl", content)}, data={"purpose": "batch"}, headers=bearer("es-" + "x" * 43)
    )
    assert response.status_code == 401
