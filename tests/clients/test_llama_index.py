"""LlamaIndex: ``OpenAIEmbedding(model_name=...)`` and ``OpenAILikeEmbedding`` return the openai SDK's vectors.

Both build openai SDK clients they never close (an AsyncOpenAI's pooled transport outlives the test's loop: 'unclosed
transport' when collected, under whatever test is running then); each test passes the SDK's own default HTTP client
(``http_client`` / ``async_http_client``, what it would build itself) and closes it."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import openai

from tests.clients.conftest import API_KEY, MODEL, TEXTS, cosines, need


def test_openai_embedding_with_model_name(base_url: str, reference: npt.NDArray[np.float32]) -> None:
    openai_module = need("llama_index.embeddings.openai")
    with openai.DefaultHttpxClient() as http:
        embed_model = openai_module.OpenAIEmbedding(
            model_name=MODEL, api_base=base_url, api_key=API_KEY, http_client=http
        )
        docs = np.array(embed_model.get_text_embedding_batch(TEXTS), dtype=np.float32)
        query = np.array(embed_model.get_query_embedding(TEXTS[1]), dtype=np.float32)
    assert cosines(docs, reference).min() >= 0.99999
    assert cosines(query, reference[1]) >= 0.99999


async def test_openai_like_embedding(base_url: str, reference: npt.NDArray[np.float32]) -> None:
    openai_like = need("llama_index.embeddings.openai_like")
    async with openai.DefaultAsyncHttpxClient() as http:
        embed_model = openai_like.OpenAILikeEmbedding(
            model_name=MODEL, api_base=base_url, api_key=API_KEY, async_http_client=http
        )
        docs = np.array(await embed_model.aget_text_embedding_batch(TEXTS), dtype=np.float32)
    assert cosines(docs, reference).min() >= 0.99999
