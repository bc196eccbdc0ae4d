"""Model listing, health and readiness, and the OpenAPI docs."""

from __future__ import annotations

import httpx


async def test_models_list_and_get(client: httpx.AsyncClient) -> None:
    listing = (await client.get("/v1/models")).json()
    assert listing["object"] == "list"
    (card,) = listing["data"]
    assert card["id"] == "bge-large-en-v1.5" and card["object"] == "model" and card["dimensions"] == 1024
    assert (await client.get("/v1/models/bge-large-en-v1.5")).json()["id"] == "bge-large-en-v1.5"
    missing = await client.get("/v1/models/BAAI/other-model")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"


async def test_served_model_name_is_what_clients_send_and_see(make_client) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(engine={"served_model_name": "BAAI/bge-large-en-v1.5"})
    assert (await client.get("/v1/models/BAAI/bge-large-en-v1.5")).status_code == 200
    r = await client.post("/v1/embeddings", json={"input": "x", "model": "BAAI/bge-large-en-v1.5"})
    assert r.status_code == 200 and r.json()["model"] == "BAAI/bge-large-en-v1.5"


async def test_health_and_ready(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health")).json() == {"status": "ok"}
    ready = await client.get("/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    assert ready.json()["backend"] == "fake" and {"dtype", "device"} <= ready.json().keys()


async def test_openapi_docs_served(client: httpx.AsyncClient) -> None:
    assert (await client.get("/docs")).status_code == 200
    spec = (await client.get("/openapi.json")).json()
    assert "/v1/embeddings" in spec["paths"]
