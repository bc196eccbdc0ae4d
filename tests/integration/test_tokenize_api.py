"""``POST /tokenize`` and ``POST /decode`` (TEI's shape) on the real app and the real bge tokenizer (fake backend)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

LAURA = "Laura is a DJ."
LAURA_IDS = [101, 6874, 2003, 1037, 6520, 1012, 102]


async def test_tokens_have_ids_text_specials_and_character_offsets(client: httpx.AsyncClient) -> None:
    text = "Übersetzung 🙂 ok"  # non-ASCII: byte offsets would differ from these character offsets
    r = await client.post("/tokenize", json={"inputs": [LAURA, text]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["offsets"] == "characters" and body["count"] == [7, len(body["tokens"][1])]
    laura, other = body["tokens"]
    assert [t["id"] for t in laura] == LAURA_IDS
    assert laura[0] == {"id": 101, "text": "[CLS]", "special": True, "start": None, "stop": None}
    assert laura[1] == {"id": 6874, "text": "Laura", "special": False, "start": 0, "stop": 5}
    for token in other:
        if not token["special"]:
            assert text[token["start"] : token["stop"]] == token["text"]
    ok = next(t for t in other if t["text"] == "ok")
    assert (ok["start"], ok["stop"]) == (14, 16)  # in UTF-8 bytes it would be (19, 21)


async def test_count_matches_what_embeddings_charge(client: httpx.AsyncClient) -> None:
    texts = ["what is a DJ", "A second, longer sentence with more tokens in it."]
    for input_type in (None, "query"):
        tok = (await client.post("/tokenize", json={"input": texts, "input_type": input_type})).json()
        emb = await client.post("/v1/embeddings", json={"input": texts, "input_type": input_type})
        assert ",".join(map(str, tok["count"])) == emb.headers["x-embedserve-input-tokens"]
    query = (await client.post("/tokenize", json={"inputs": "what is a DJ", "input_type": "query"})).json()
    instruction = [t for t in query["tokens"][0] if not t["special"] and t["start"] is None]
    assert [t["text"] for t in instruction][:2] == ["represent", "this"]


async def test_without_special_tokens(client: httpx.AsyncClient) -> None:
    body = (await client.post("/tokenize", json={"inputs": LAURA, "add_special_tokens": False})).json()
    assert [t["id"] for t in body["tokens"][0]] == LAURA_IDS[1:-1] and body["count"] == [5]


async def test_decode_single_and_batched(client: httpx.AsyncClient) -> None:
    r = await client.post("/decode", json={"ids": LAURA_IDS})
    assert r.status_code == 200 and r.json()["texts"] == ["laura is a dj."]
    kept = await client.post("/decode", json={"ids": [LAURA_IDS, [6874]], "skip_special_tokens": False})
    assert kept.json()["texts"] == ["[CLS] laura is a dj. [SEP]", "laura"]


@pytest.mark.parametrize(
    ("path", "body", "param", "fragment"),
    [
        ("/tokenize", {}, "inputs", "inputs"),
        ("/tokenize", {"inputs": "a", "input": "b"}, "inputs", "exactly one"),
        ("/tokenize", {"inputs": []}, "input", "empty"),
        ("/tokenize", {"inputs": 5}, "inputs", None),
        ("/tokenize", {"inputs": "a", "model": "gpt-x"}, "model", "gpt-x"),
        ("/decode", {"ids": [101, 30522]}, "ids", "30522"),
        ("/decode", {"ids": []}, "ids", "empty"),
        ("/decode", {"ids": "laura"}, "ids", None),
    ],
)
async def test_bad_input_gets_the_openai_error_envelope(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], param: str, fragment: str | None
) -> None:
    r = await client.post(path, json=body)
    assert r.status_code in (400, 404), r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["param"] == param
    if fragment:
        assert fragment in error["message"]
