"""Whole-app fixtures: the real app, the real tokenizer, and the fake backend (API behaviour only)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from embedserve.api.app import create_app
from embedserve.settings import EngineSettings, Settings
from tests.paths import REFERENCE_DIR

AppFactory = Callable[..., FastAPI]


def fake_settings(**overrides: Any) -> Settings:
    engine = {"model": str(REFERENCE_DIR), "backend": "fake", **overrides.pop("engine", {})}
    return Settings(engine=EngineSettings(**engine), auth=False, **overrides)


@pytest.fixture
async def make_client() -> AsyncIterator[Callable[..., Any]]:
    """Build an app from settings overrides and return an httpx client bound to it (lifespan included)."""
    stack: list[Any] = []

    async def factory(**overrides: Any) -> httpx.AsyncClient:
        app = create_app(fake_settings(**overrides))
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://test",
            headers={"Authorization": "Bearer x"},
        )
        stack.append((lifespan, client))
        return client

    yield factory
    for lifespan, client in reversed(stack):
        await client.aclose()
        await lifespan.__aexit__(None, None, None)


@pytest.fixture
async def client(make_client: Callable[..., Any]) -> httpx.AsyncClient:
    result: httpx.AsyncClient = await make_client()
    return result
