"""The API tests again, with the app in front of a real engine process (``--api-processes``'s ``RemoteEngine``):
every access-line, embeddings, errors, token-id and tokenize test, plus what only crossing a process can break
(inference errors, a full queue's 503 and Retry-After, the engine process dying)."""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest

from embedserve.api.app import create_app
from embedserve.settings import Settings
from tests.integration import (
    test_access_log,
    test_embeddings_api,
    test_errors_api,
    test_token_ids_api,
    test_tokenize_api,
)
from tests.integration.conftest import fake_settings
from tests.multiproc_support import EngineProcess, engine_process

# Each test of those modules that talks to the app runs here too, on the fixtures below.
globals().update(
    {
        name: test
        for module in (test_access_log, test_embeddings_api, test_errors_api, test_token_ids_api, test_tokenize_api)
        for name, test in vars(module).items()
        if name.startswith("test_") and {"client", "make_client"} & set(inspect.signature(test).parameters)
    }
)


@pytest.fixture(scope="module")
def engine_proc() -> Iterator[EngineProcess]:
    with engine_process(fake_settings().engine) as proc:
        yield proc


class _Apps:
    def __init__(self) -> None:
        self.stack: list[tuple[Any, httpx.AsyncClient]] = []

    async def open(self, settings: Settings, proc: EngineProcess) -> httpx.AsyncClient:
        app = create_app(settings, engine=proc.client(settings.engine))
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test", headers={"Authorization": "Bearer x"}
        )
        self.stack.append((lifespan, client))
        return client

    async def close(self) -> None:
        for lifespan, client in reversed(self.stack):
            await client.aclose()
            await lifespan.__aexit__(None, None, None)


@pytest.fixture
async def make_client(engine_proc: EngineProcess) -> AsyncIterator[Callable[..., Any]]:
    apps = _Apps()

    async def factory(**overrides: Any) -> httpx.AsyncClient:
        return await apps.open(fake_settings(**overrides), engine_proc)

    yield factory
    await apps.close()


@pytest.fixture
async def client(make_client: Callable[..., Any]) -> httpx.AsyncClient:
    result: httpx.AsyncClient = await make_client()
    return result


async def test_inference_failure_in_the_engine_process_is_a_500_engine_error(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/embeddings", json={"input": ["fine", "FAIL"]})
    assert r.status_code == 500, r.text
    err = r.json()["error"]
    assert err["code"] == "engine_error" and err["type"] == "server_error"
    assert "logged" in err["message"]


async def test_a_full_engine_queue_is_a_503_with_retry_after() -> None:
    settings = fake_settings(engine={"max_queued_tokens": 512})
    text = "word " * 400
    apps = _Apps()
    with engine_process(settings.engine, delay=2.0) as proc:
        try:
            client = await apps.open(settings, proc)
            replies = await asyncio.gather(
                *(client.post("/v1/embeddings", json={"input": [text, text]}) for _ in range(10))
            )
        finally:
            await apps.close()
    statuses = sorted(r.status_code for r in replies)
    assert set(statuses) == {200, 503}, statuses
    refused = next(r for r in replies if r.status_code == 503)
    assert refused.json()["error"]["code"] == "server_overloaded"
    assert int(refused.headers["retry-after"]) >= 1


async def test_the_engine_process_dying_fails_requests_with_503_and_ready_with_503() -> None:
    settings = fake_settings()
    apps = _Apps()
    with engine_process(settings.engine, delay=1.0) as proc:
        try:
            client = await apps.open(settings, proc)
            assert (await client.get("/ready")).status_code == 200
            in_flight = asyncio.create_task(client.post("/v1/embeddings", json={"input": "cut off"}))
            await asyncio.sleep(0.3)
            assert proc.process.pid is not None
            os.kill(proc.process.pid, signal.SIGKILL)
            cut = await in_flight
            late = await client.post("/v1/embeddings", json={"input": "after"})
            ready = await client.get("/ready")
        finally:
            await apps.close()
    for r in (cut, late):
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "service_unavailable"
        assert "engine process" in r.json()["error"]["message"] and r.headers["retry-after"] == "1"
    assert ready.status_code == 503
