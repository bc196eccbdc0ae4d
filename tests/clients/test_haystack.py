"""Haystack: ``OpenAIDocumentEmbedder`` / ``OpenAITextEmbedder`` with ``api_base_url`` return the openai SDK's
vectors."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from tests.clients.conftest import API_KEY, MODEL, TEXTS, cosines, need


@pytest.fixture(autouse=True)
def no_telemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HAYSTACK_TELEMETRY_ENABLED", "False")


def test_document_embedder(base_url: str, reference: npt.NDArray[np.float32]) -> None:
    haystack = need("haystack")
    embedders = need("haystack.components.embedders")
    secret = need("haystack.utils").Secret.from_token(API_KEY)
    embedder = embedders.OpenAIDocumentEmbedder(api_key=secret, model=MODEL, api_base_url=base_url, progress_bar=False)
    result = embedder.run(documents=[haystack.Document(content=text) for text in TEXTS])
    vectors = np.array([doc.embedding for doc in result["documents"]], dtype=np.float32)
    assert cosines(vectors, reference).min() >= 0.99999
    text_embedder = embedders.OpenAITextEmbedder(api_key=secret, model=MODEL, api_base_url=base_url)
    assert cosines(text_embedder.run(text=TEXTS[2])["embedding"], reference[2]) >= 0.99999
