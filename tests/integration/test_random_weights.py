"""Random weights (``--load-format dummy``; the fake backend reads none either) are marked wherever a user looks:
``/v1/models``, ``/ready`` and a header on every embeddings response. Real weights carry no mark (tests/clients)."""

from __future__ import annotations

import httpx


async def test_models_ready_and_every_embeddings_response_say_random_weights(client: httpx.AsyncClient) -> None:
    (card,) = (await client.get("/v1/models")).json()["data"]
    assert card["random_weights"] is True
    assert (await client.get(f"/v1/models/{card['id']}")).json()["random_weights"] is True
    assert (await client.get("/ready")).json()["random_weights"] is True
    for body in ({"input": "Laura is a DJ."}, {"input": ["a", "b"], "encoding_format": "base64"}):
        r = await client.post("/v1/embeddings", json=body)
        assert r.status_code == 200 and r.headers["x-embedserve-random-weights"] == "true"
