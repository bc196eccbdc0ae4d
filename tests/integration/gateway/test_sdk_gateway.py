"""The official ``openai`` SDK against the real app with a real key: success, 402 and 429 as its exceptions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import httpx
import openai
import pytest
from fastapi import FastAPI

from embedserve.accounting.store_gateway import StoreGateway
from embedserve.api.app import create_app
from embedserve.settings import Settings
from tests.gateway_stub_engine import stub_engine

MODEL = "BAAI/bge-large-en-v1.5"


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[FastAPI]:
    application = create_app(Settings(data_dir=tmp_path, admin_key="adm-0123456789-abcdefgh"), engine=stub_engine())
    async with application.router.lifespan_context(application):
        yield application


def sdk(app: FastAPI, secret: str, sent: list[str], *, max_retries: int = 2) -> openai.AsyncOpenAI:
    async def count(request: httpx.Request) -> None:
        sent.append(request.url.path)

    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), event_hooks={"request": [count]})
    return openai.AsyncOpenAI(
        api_key=secret, base_url="http://test/v1", http_client=cast(Any, http), max_retries=max_retries
    )


async def test_seed_call_with_a_real_key(app: FastAPI) -> None:
    gateway: StoreGateway = app.state.gateway
    key = await gateway.keys.create(name="sdk", credits=3)
    response = await sdk(app, key.secret, []).embeddings.create(input="Laura is a DJ.", model=MODEL)
    assert response.usage.prompt_tokens == 7 and len(response.data[0].embedding) == 1024
    assert response.model_extra is not None
    assert response.model_extra["meta"] == {"usage": {"credits_used": 1}}


async def test_402_is_an_api_status_error_and_is_not_retried(app: FastAPI) -> None:
    gateway: StoreGateway = app.state.gateway
    key = await gateway.keys.create(name="poor", credits=0)
    sent: list[str] = []
    with pytest.raises(openai.APIStatusError) as info:
        await sdk(app, key.secret, sent).embeddings.create(input="Laura is a DJ.", model=MODEL)
    assert info.value.status_code == 402
    assert "costs 1 credit " in info.value.message and "insufficient_quota" in str(info.value.body)
    assert sent == ["/v1/embeddings"]  # x-should-retry: false, despite max_retries=2


async def test_429_is_a_rate_limit_error_with_its_message(app: FastAPI) -> None:
    gateway: StoreGateway = app.state.gateway
    key = await gateway.keys.create(name="busy", rpm=1)
    client = sdk(app, key.secret, [], max_retries=0)
    await client.embeddings.create(input="Laura is a DJ.", model=MODEL)
    with pytest.raises(openai.RateLimitError, match="1 requests per minute") as info:
        await client.embeddings.create(input="Laura is a DJ.", model=MODEL)
    assert info.value.response.headers["retry-after-ms"]


async def test_a_wrong_key_is_an_authentication_error_not_retried(app: FastAPI) -> None:
    sent: list[str] = []
    with pytest.raises(openai.AuthenticationError, match="Incorrect API key"):
        await sdk(app, "es-" + "z" * 43, sent).embeddings.create(input="x", model=MODEL)
    assert len(sent) == 1
