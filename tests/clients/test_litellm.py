"""LiteLLM: ``embedding(model="openai/<served name>", api_base=..., api_key=...)`` returns the openai SDK's vectors."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from tests.clients.conftest import API_KEY, MODEL, TEXTS, cosines, need

# LiteLLM builds pydantic models at import that warn about ReadOnly TypedDict items: noise, not our behaviour.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(autouse=True)
def litellm_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    # LiteLLM fetches its model price list from the internet at import unless told to use the copy it ships.
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    monkeypatch.setenv("LITELLM_TELEMETRY", "False")


def test_embedding_through_the_openai_prefix(base_url: str, reference: npt.NDArray[np.float32]) -> None:
    litellm = need("litellm")
    response = litellm.embedding(model=f"openai/{MODEL}", input=TEXTS, api_base=base_url, api_key=API_KEY)
    vectors = np.array([item["embedding"] for item in response.data], dtype=np.float32)
    assert cosines(vectors, reference).min() >= 0.99999
    assert response.usage.prompt_tokens > 0


async def test_async_embedding(base_url: str, reference: npt.NDArray[np.float32]) -> None:
    litellm = need("litellm")
    response = await litellm.aembedding(model=f"openai/{MODEL}", input=TEXTS, api_base=base_url, api_key=API_KEY)
    vectors = np.array([item["embedding"] for item in response.data], dtype=np.float32)
    assert cosines(vectors, reference).min() >= 0.99999
