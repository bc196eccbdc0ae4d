"""The embeddings endpoint as a client sees it: input forms, encodings, usage, limits and headers."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import numpy as np

from embedserve.api.encoding import from_base64

LAURA_IDS = [101, 6874, 2003, 1037, 6520, 1012, 102]
LAURA_CL100K = [77560, 374, 264, 22102, 13]  # tiktoken cl100k_base, as LangChain sends "Laura is a DJ."


def vectors(body: dict[str, Any]) -> np.ndarray:
    return np.array([d["embedding"] for d in body["data"]], dtype=np.float32)


async def embed(client: httpx.AsyncClient, **payload: object) -> httpx.Response:
    payload.setdefault("model", "bge-large-en-v1.5")
    return await client.post("/v1/embeddings", json=payload)


async def test_seed_example_shape_usage_and_credits(client: httpx.AsyncClient) -> None:
    r = await embed(client, input="Laura is a DJ.")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list"
    assert body["model"] == "bge-large-en-v1.5"
    assert body["usage"] == {"prompt_tokens": 7, "total_tokens": 7}
    assert body["meta"] == {"usage": {"credits_used": 1}}
    assert re.fullmatch(r"embd-[0-9a-f]{32}", body["id"])
    assert abs(body["created"] - time.time()) < 60
    (item,) = body["data"]
    assert item["object"] == "embedding" and item["index"] == 0
    vec = np.array(item["embedding"])
    assert vec.shape == (1024,) and np.isfinite(vec).all()
    assert abs(np.linalg.norm(vec) - 1) < 1e-5
    assert r.headers["x-embedserve-input-tokens"] == "7"


async def test_all_four_input_forms_agree(client: httpx.AsyncClient) -> None:
    text = (await embed(client, input="Laura is a DJ.")).json()
    texts = (await embed(client, input=["Laura is a DJ.", "Hello world"])).json()
    ids = (await embed(client, input=LAURA_IDS)).json()
    id_lists = (await embed(client, input=[LAURA_CL100K, LAURA_IDS])).json()
    ref = vectors(text)[0]
    assert [d["index"] for d in texts["data"]] == [0, 1]
    assert np.array_equal(vectors(texts)[0], ref)
    assert not np.allclose(vectors(texts)[1], ref)
    assert np.array_equal(vectors(ids)[0], ref)
    # OpenAI's cl100k ids and the model's own framed ids embed alike, and both count the model's 7 tokens.
    assert np.array_equal(vectors(id_lists)[0], ref) and np.array_equal(vectors(id_lists)[1], ref)
    assert ids["usage"]["prompt_tokens"] == 7 and id_lists["usage"]["prompt_tokens"] == 14


async def test_base64_matches_float_bit_for_bit(client: httpx.AsyncClient) -> None:
    inputs = ["Laura is a DJ.", "A second, longer sentence with more tokens in it."]
    floats = vectors((await embed(client, input=inputs)).json())
    b64 = (await embed(client, input=inputs, encoding_format="base64")).json()
    decoded = np.stack([from_base64(d["embedding"]) for d in b64["data"]])
    assert decoded.dtype == np.float32
    assert decoded.tobytes() == floats.tobytes()


async def test_dimensions_equal_to_width_accepted_other_refused(client: httpx.AsyncClient) -> None:
    assert (await embed(client, input="a", dimensions=1024)).status_code == 200
    r = await embed(client, input="a", dimensions=256)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == "dimensions" and "Matryoshka" in err["message"]


async def test_query_input_type_prepends_instruction_and_counts_it(client: httpx.AsyncClient) -> None:
    doc = (await embed(client, input="what is a DJ", input_type="document")).json()
    query = (await embed(client, input="what is a DJ", input_type="query")).json()
    spelled = (
        await embed(client, input="Represent this sentence for searching relevant passages: what is a DJ")
    ).json()
    assert query["usage"]["prompt_tokens"] > doc["usage"]["prompt_tokens"]
    assert np.array_equal(vectors(query), vectors(spelled))
    assert query["usage"] == spelled["usage"]
    ids_query = (await embed(client, input=LAURA_IDS, input_type="search_query")).json()
    text_query = (await embed(client, input="Laura is a DJ.", input_type="query")).json()
    assert np.array_equal(vectors(ids_query), vectors(text_query))


async def test_too_long_input_is_refused_naming_index_count_and_limit(client: httpx.AsyncClient) -> None:
    long_text = "word " * 600
    r = await embed(client, input=["short", long_text])
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "context_length_exceeded" and err["param"] == "input"
    assert "input[1]" in err["message"] and "602 tokens" in err["message"] and "512" in err["message"]


async def test_truncate_true_truncates_and_reports_it(client: httpx.AsyncClient) -> None:
    r = await embed(client, input=["short", "word " * 600], truncate=True)
    assert r.status_code == 200, r.text
    assert r.headers["x-embedserve-truncated-inputs"] == "1"
    assert r.headers["x-embedserve-input-tokens"] == "3,512"
    assert r.json()["usage"]["prompt_tokens"] == 515


async def test_server_auto_truncate_flag(make_client) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(engine={"auto_truncate": True})
    r = await embed(client, input="word " * 600)
    assert r.status_code == 200 and r.headers["x-embedserve-truncated-inputs"] == "1"
    assert (await embed(client, input="word " * 600, truncate=False)).status_code == 400


async def test_unknown_fields_and_user_are_accepted(client: httpx.AsyncClient) -> None:
    r = await embed(client, input="x", user="user-1", something_else={"a": 1})
    assert r.status_code == 200


async def test_model_may_be_omitted_or_named_by_source(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/embeddings", json={"input": "x"})
    assert r.status_code == 200 and r.json()["model"] == "bge-large-en-v1.5"


async def test_embeddings_alias_route(client: httpx.AsyncClient) -> None:
    r = await client.post("/embeddings", json={"input": "x", "model": "bge-large-en-v1.5"})
    assert r.status_code == 200


async def test_max_inputs_accepted_and_one_more_refused(client: httpx.AsyncClient) -> None:
    ok = await embed(client, input=["tok"] * 2048)
    assert ok.status_code == 200 and len(ok.json()["data"]) == 2048
    r = await embed(client, input=["tok"] * 2049)
    assert r.status_code == 400 and "2048" in r.json()["error"]["message"]


async def test_request_id_is_echoed_or_minted(client: httpx.AsyncClient) -> None:
    r = await client.get("/health", headers={"x-request-id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    minted = (await client.get("/health")).headers["x-request-id"]
    assert minted.startswith("req_") and len(minted) > 10
    assert (await embed(client, input="x")).headers["x-request-id"].startswith("req_")
