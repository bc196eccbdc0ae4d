"""In-process app fixtures for the batch API: the fake backend on the real bge tokenizer, a fresh data dir."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from openai.types import Batch


def jsonl(lines: Iterable[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)


def request_line(custom_id: str, body: dict[str, Any], *, url: str = "/v1/embeddings") -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


async def upload(client: httpx.AsyncClient, content: bytes, *, name: str = "in.jsonl") -> dict[str, Any]:
    response = await client.post("/v1/files", files={"file": (name, content)}, data={"purpose": "batch"})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def create_batch(http: httpx.AsyncClient, secret: str, custom_id: str, *, text: str | None = None) -> str:
    """Upload one request line (its input ``text``, or "text of <custom_id>") as ``secret`` and create its batch."""
    content = jsonl([request_line(custom_id, {"input": text or f"text of {custom_id}"})])
    upload = await http.post(
        "/v1/files", files={"file": ("in.jsonl", content)}, data={"purpose": "batch"}, headers=bearer(secret)
    )
    assert upload.status_code == 200, upload.text
    created = await http.post("/v1/batches", json={"input_file_id": upload.json()["id"], **CREATE},
                              headers=bearer(secret))  # fmt: skip
    assert created.status_code == 200, created.text
    batch_id: str = created.json()["id"]
    return batch_id


async def wait_for(client: httpx.AsyncClient, batch_id: str, *, until: Callable[[dict[str, Any]], bool],
                   timeout: float = 60, headers: dict[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    while True:
        batch: dict[str, Any] = (await client.get(f"/v1/batches/{batch_id}", headers=headers)).json()
        if until(batch):
            return batch
        assert time.monotonic() < deadline, f"batch never reached the state: {batch}"
        await asyncio.sleep(0.05)


TERMINAL = {"completed", "failed", "cancelled", "expired"}


def finished(batch: dict[str, Any]) -> bool:
    return batch["status"] in TERMINAL


def sdk_wait(client: openai.OpenAI, batch: Batch, *, timeout: float) -> Batch:
    """Poll with the official SDK (``batches.retrieve``) until the batch ends, as a user's script does."""
    deadline = time.monotonic() + timeout
    while batch.status not in TERMINAL:
        assert time.monotonic() < deadline, batch
        time.sleep(0.2)
        batch = client.batches.retrieve(batch.id)
    return batch


@pytest.fixture
async def bclient(make_client: Callable[..., Any], tmp_path: Path) -> httpx.AsyncClient:
    client: httpx.AsyncClient = await make_client(data_dir=tmp_path, batch_poll_seconds=0.05, batch_chunk_lines=4)
    return client


ADMIN = "test-admin-key-0123456789"
CREATE = {"endpoint": "/v1/embeddings", "completion_window": "24h"}


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
async def auth_app(tmp_path: Path) -> Any:
    """The real app with the store gateway (SQLite in tmp_path) and the fake backend on the real tokenizer."""
    from embedserve.api.app import create_app
    from embedserve.settings import EngineSettings, Settings
    from tests.paths import REFERENCE_DIR

    settings = Settings(
        engine=EngineSettings(model=str(REFERENCE_DIR), backend="fake", served_model_name="BAAI/bge-large-en-v1.5"),
        data_dir=tmp_path, admin_key=ADMIN, batch_poll_seconds=0.05, batch_chunk_lines=3,
    )  # fmt: skip
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def http(auth_app: Any) -> Any:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=auth_app), base_url="http://test") as client:
        yield client


from tests.integration.gateway.conftest import pg_url  # noqa: E402, F401  (a fresh PostgreSQL database per test)
