"""LangChain's ``OpenAIEmbeddings`` with its defaults: it tokenises with tiktoken's cl100k_base and sends token ids,
which embedserve reads as cl100k (not as the model's WordPiece ids) and embeds exactly like the text.

``OpenAIEmbeddings`` builds openai SDK clients and never closes them: an AsyncOpenAI's pooled transport outlives the
test's loop ('unclosed transport' when collected, under whatever test is running then). Each test hands it the SDK's
own default HTTP client (``http_client`` / ``http_async_client``, what it would build itself) and closes that."""

from __future__ import annotations

import httpx
import numpy as np
import numpy.typing as npt
import openai

from tests.clients.conftest import API_KEY, MODEL, TEXTS, cosines, need


def test_openai_embeddings_defaults_match_the_text_path(base_url: str, reference: npt.NDArray[np.float32]) -> None:
    langchain_openai = need("langchain_openai")
    with openai.DefaultHttpxClient() as http:
        embeddings = langchain_openai.OpenAIEmbeddings(
            base_url=base_url, model=MODEL, api_key=API_KEY, http_client=http
        )
        assert embeddings.check_embedding_ctx_length and embeddings.tiktoken_enabled  # the defaults: token ids are sent
        docs = np.array(embeddings.embed_documents(TEXTS), dtype=np.float32)
        query = np.array(embeddings.embed_query(TEXTS[0]), dtype=np.float32)
    assert cosines(docs, reference).min() >= 0.99999
    assert cosines(query, reference[0]) >= 0.99999


def test_cl100k_ids_report_how_they_were_read_and_count_model_tokens(base_url: str) -> None:
    tiktoken = need("tiktoken")
    ids = tiktoken.get_encoding("cl100k_base").encode(TEXTS[0])
    by_ids = httpx.post(f"{base_url}/embeddings", json={"input": [ids], "model": MODEL}, timeout=60)
    by_text = httpx.post(f"{base_url}/embeddings", json={"input": [TEXTS[0]], "model": MODEL}, timeout=60)
    assert by_ids.headers["x-embedserve-token-ids"] == "tiktoken"
    assert by_ids.json()["usage"] == by_text.json()["usage"] == {"prompt_tokens": 9, "total_tokens": 9}


async def test_async_openai_embeddings_defaults(base_url: str, reference: npt.NDArray[np.float32]) -> None:
    langchain_openai = need("langchain_openai")
    async with openai.DefaultAsyncHttpxClient() as http:
        embeddings = langchain_openai.OpenAIEmbeddings(
            base_url=base_url, model=MODEL, api_key=API_KEY, http_async_client=http
        )
        docs = np.array(await embeddings.aembed_documents(TEXTS), dtype=np.float32)
    assert cosines(docs, reference).min() >= 0.99999
