"""LiteLLM: ``embedding(model="openai/<served name>", api_base=..., api_key=...)`` returns the openai SDK's vectors."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from types import ModuleType
from typing import TypeVar

import numpy as np
import numpy.typing as npt
import openai
import pytest

from tests.clients.conftest import API_KEY, MODEL, TEXTS, cosines, need

# LiteLLM builds pydantic models at import that warn about ReadOnly TypedDict items: noise, not our behaviour.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

Client = TypeVar("Client", openai.OpenAI, openai.AsyncOpenAI)


@pytest.fixture(autouse=True)
def litellm_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    # LiteLLM fetches its model price list from the internet at import unless told to use the copy it ships.
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    monkeypatch.setenv("LITELLM_TELEMETRY", "False")


@pytest.fixture
def thread_event_loop() -> Iterator[None]:
    """A loop set for the thread and closed after the test. LiteLLM's blocking calls report to its service loggers
    on ``asyncio.get_event_loop()``, which, with none set, creates one and leaves it open (a ResourceWarning)."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        yield
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def _take_cached(litellm: ModuleType, kind: type[Client], base_url: str) -> list[Client]:
    """Remove from LiteLLM's client cache, and return, the openai SDK clients of ``kind`` it built for ``openai/``
    calls to ``base_url``. They hold the connections to the server; LiteLLM closes one only well after evicting it (a
    10-minute TTL, then 15 minutes' grace), and an async one only from the loop it was built on, which pytest-asyncio
    closes with the test. Only clients that really left the cache are returned (a client still cached must not be
    closed under a later call), and a cache without these attributes (another LiteLLM) yields nothing rather than an
    error that would hide the test's own."""
    cache = getattr(litellm, "in_memory_llm_clients_cache", None)
    entries = getattr(cache, "cache_dict", None)
    if cache is None or not isinstance(entries, dict) or not hasattr(cache, "delete_cache"):
        return []
    ours = base_url.rstrip("/")
    taken = [
        (key, client)
        for key, client in list(entries.items())
        if isinstance(client, kind) and str(client.base_url).rstrip("/") == ours
    ]
    for key, _ in taken:
        cache.delete_cache(key)
    return [client for key, client in taken if key not in entries]


def test_embedding_through_the_openai_prefix(
    base_url: str, reference: npt.NDArray[np.float32], thread_event_loop: None
) -> None:
    litellm = need("litellm")
    try:
        response = litellm.embedding(model=f"openai/{MODEL}", input=TEXTS, api_base=base_url, api_key=API_KEY)
    finally:
        for client in _take_cached(litellm, openai.OpenAI, base_url):
            client.close()
    vectors = np.array([item["embedding"] for item in response.data], dtype=np.float32)
    assert cosines(vectors, reference).min() >= 0.99999
    assert response.usage.prompt_tokens > 0


async def test_async_embedding(base_url: str, reference: npt.NDArray[np.float32]) -> None:
    litellm = need("litellm")
    try:
        response = await litellm.aembedding(model=f"openai/{MODEL}", input=TEXTS, api_base=base_url, api_key=API_KEY)
    finally:
        for aclient in _take_cached(litellm, openai.AsyncOpenAI, base_url):
            await aclient.close()  # on this test's loop, while it runs
    vectors = np.array([item["embedding"] for item in response.data], dtype=np.float32)
    assert cosines(vectors, reference).min() >= 0.99999
