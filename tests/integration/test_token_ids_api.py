"""What a token-id array means (``--token-ids``): framed WordPiece ids, OpenAI cl100k ids, or refused; and the header
that says which reading was used."""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest
import tiktoken_ext.openai_public

from embedserve.engine.token_ids import CL100K_FILE, CL100K_PAT_STR, CL100K_SHA256, CL100K_SPECIAL_TOKENS, cl100k

LAURA_IDS = [101, 6874, 2003, 1037, 6520, 1012, 102]  # WordPiece, framed [CLS] ... [SEP]
CAT = "The cat sat on the mat."


async def embed(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await client.post("/v1/embeddings", json={"model": "bge-large-en-v1.5", **body})


def vectors(body: dict[str, Any]) -> np.ndarray:
    return np.array([d["embedding"] for d in body["data"]], dtype=np.float32)


def test_shipped_cl100k_matches_the_hash_tiktoken_publishes() -> None:
    source = inspect.getsource(tiktoken_ext.openai_public.cl100k_base)
    assert f'expected_hash="{CL100K_SHA256}"' in source
    assert hashlib.sha256(CL100K_FILE.read_bytes()).hexdigest() == CL100K_SHA256
    published = tiktoken_ext.openai_public.ENDOFTEXT, tiktoken_ext.openai_public.ENDOFPROMPT
    assert all(token in CL100K_SPECIAL_TOKENS for token in published) and CL100K_PAT_STR in source
    assert cl100k().decode(cl100k().encode(CAT)) == CAT


async def test_cl100k_ids_embed_like_their_text_and_count_model_tokens(client: httpx.AsyncClient) -> None:
    # "The cat sat on the mat." in cl100k has every id under BERT's 30522: read as WordPiece it embedded garbage.
    cat_ids = cl100k().encode(CAT)
    assert max(cat_ids) < 30522
    text = await embed(client, input=CAT)
    ids = await embed(client, input=cat_ids)
    assert ids.status_code == 200, ids.text
    assert np.array_equal(vectors(ids.json()), vectors(text.json()))
    assert ids.json()["usage"] == text.json()["usage"]
    assert ids.headers["x-embedserve-token-ids"] == "tiktoken"
    assert ids.headers["x-embedserve-input-tokens"] == text.headers["x-embedserve-input-tokens"]
    assert "x-embedserve-token-ids" not in text.headers


async def test_framed_wordpiece_and_cl100k_mix_in_one_request(client: httpx.AsyncClient) -> None:
    long_ids = cl100k().encode("ids above the BERT vocabulary: Übersetzungsmöglichkeiten")
    assert max(long_ids) >= 30522
    r = await embed(client, input=[LAURA_IDS, long_ids, cl100k().encode("Laura is a DJ.")])
    assert r.status_code == 200, r.text
    assert r.headers["x-embedserve-token-ids"] == "wordpiece,tiktoken,tiktoken"
    rows = vectors(r.json())
    assert np.array_equal(rows[0], rows[2])


async def test_query_type_applies_to_cl100k_ids(client: httpx.AsyncClient) -> None:
    ids = await embed(client, input=cl100k().encode(CAT), input_type="query")
    text = await embed(client, input=CAT, input_type="query")
    assert np.array_equal(vectors(ids.json()), vectors(text.json()))


async def test_bad_cl100k_id_is_a_400_naming_it(client: httpx.AsyncClient) -> None:
    r = await embed(client, input=[[791, 8415], [5, 100300]])
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == "input" and "input[1]" in err["message"] and "100300" in err["message"]


async def test_wordpiece_mode_wraps_bare_ids(make_client: Callable[..., Any]) -> None:
    client = await make_client(engine={"token_ids": "wordpiece"})
    bare = await embed(client, input=LAURA_IDS[1:-1])
    framed = await embed(client, input=LAURA_IDS)
    assert np.array_equal(vectors(bare.json()), vectors(framed.json()))
    assert bare.headers["x-embedserve-token-ids"] == "wordpiece"


async def test_tiktoken_mode_reads_even_framed_arrays_as_cl100k(make_client: Callable[..., Any]) -> None:
    client = await make_client(engine={"token_ids": "tiktoken"})
    r = await embed(client, input=LAURA_IDS)
    assert r.status_code == 200 and r.headers["x-embedserve-token-ids"] == "tiktoken"
    text = await embed(client, input=cl100k().decode(LAURA_IDS))
    assert np.array_equal(vectors(r.json()), vectors(text.json()))


@pytest.mark.parametrize("payload", [LAURA_IDS, [LAURA_IDS], [[791, 8415]]])
async def test_reject_mode_refuses_token_ids(make_client: Callable[..., Any], payload: list[Any]) -> None:
    client = await make_client(engine={"token_ids": "reject"})
    r = await embed(client, input=payload)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "invalid_input" and "send the text" in err["message"]
    assert (await embed(client, input=CAT)).status_code == 200
