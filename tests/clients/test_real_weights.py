"""A server on real weights is not marked random (the --load-format dummy marks are in tests/integration)."""

from __future__ import annotations

import httpx

from tests.clients.conftest import MODEL


def test_real_weights_carry_no_random_mark(minilm_server: object, base_url: str) -> None:
    assert httpx.get(f"{base_url}/models", timeout=30).json()["data"][0]["random_weights"] is False
    assert httpx.get(f"{base_url.removesuffix('/v1')}/ready", timeout=60).json()["random_weights"] is False
    r = httpx.post(f"{base_url}/embeddings", json={"input": "x", "model": MODEL}, timeout=60)
    assert r.status_code == 200 and "x-embedserve-random-weights" not in r.headers
