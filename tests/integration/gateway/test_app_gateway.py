"""The gateway inside the real app (ASGI, SQLite store): 401/402/429 envelopes, headers, admin API, refunds."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from embedserve.accounting.store_gateway import StoreGateway
from embedserve.accounting.usage import usage_report
from embedserve.api.app import create_app
from embedserve.settings import Settings
from tests.gateway_stub_engine import stub_engine

ADMIN = "test-admin-key-0123456789"
SEED = {"input": "Laura is a DJ.", "model": "BAAI/bge-large-en-v1.5"}


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[FastAPI]:
    settings = Settings(data_dir=tmp_path, admin_key=ADMIN)
    application = create_app(settings, engine=stub_engine())
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
        yield c


def gw(app: FastAPI) -> StoreGateway:
    gateway = app.state.gateway
    assert isinstance(gateway, StoreGateway)
    return gateway


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def test_the_default_app_uses_the_store_gateway(app: FastAPI) -> None:
    assert isinstance(app.state.gateway, StoreGateway)


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "es-no-bearer-scheme"}, {"Authorization": "Bearer "}, bearer("garbage"),
     bearer("es-" + "x" * 43)],
)  # fmt: skip
async def test_bad_keys_get_the_openai_401_envelope(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    response = await client.post("/v1/embeddings", json=SEED, headers=headers)
    assert response.status_code == 401
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_api_key")
    assert response.headers["x-should-retry"] == "false"


async def test_a_revoked_key_gets_401(app: FastAPI, client: httpx.AsyncClient) -> None:
    key = await gw(app).keys.create(name="gone")
    await gw(app).keys.revoke(key.info.id)
    response = await client.post("/v1/embeddings", json=SEED, headers=bearer(key.secret))
    assert response.status_code == 401 and "revoked" in response.json()["error"]["message"]


async def test_health_and_ready_stay_open(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health")).status_code == 200
    assert (await client.get("/ready")).status_code == 200


async def test_a_paid_call_reports_credits_and_rate_limit_headers(app: FastAPI, client: httpx.AsyncClient) -> None:
    key = await gw(app).keys.create(name="alice", credits=10, rpm=100, tpm=10_000)
    response = await client.post("/v1/embeddings", json=SEED, headers=bearer(key.secret))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["usage"]["prompt_tokens"] == 7
    assert body["meta"]["usage"]["credits_used"] == 1
    assert response.headers["x-ratelimit-limit-requests"] == "100"
    assert response.headers["x-ratelimit-remaining-tokens"] == str(10_000 - 7)
    assert (await gw(app).keys.get(key.info.id)).credits == 9


async def test_too_few_credits_is_402_and_not_retried(app: FastAPI, client: httpx.AsyncClient) -> None:
    key = await gw(app).keys.create(name="poor", credits=0)
    response = await client.post("/v1/embeddings", json=SEED, headers=bearer(key.secret))
    assert response.status_code == 402
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("insufficient_quota", "insufficient_quota")
    assert response.headers["x-should-retry"] == "false"


async def test_over_the_limit_is_429_with_retry_headers(app: FastAPI, client: httpx.AsyncClient) -> None:
    key = await gw(app).keys.create(name="busy", rpm=1)
    assert (await client.post("/v1/embeddings", json=SEED, headers=bearer(key.secret))).status_code == 200
    response = await client.post("/v1/embeddings", json=SEED, headers=bearer(key.secret))
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
    for name in ("retry-after", "retry-after-ms", "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
                 "x-ratelimit-reset-requests"):  # fmt: skip
        assert name in response.headers
    assert "x-should-retry" not in response.headers


async def test_failed_inference_is_refunded(app: FastAPI, client: httpx.AsyncClient) -> None:
    key = await gw(app).keys.create(name="alice", credits=10)
    response = await client.post("/v1/embeddings", json={"input": "FAIL please"}, headers=bearer(key.secret))
    assert response.status_code == 500
    assert (await gw(app).keys.get(key.info.id)).credits == 10


async def test_admin_routes_refuse_user_keys_and_missing_keys(app: FastAPI, client: httpx.AsyncClient) -> None:
    key = await gw(app).keys.create(name="alice")
    assert (await client.get("/admin/keys")).status_code == 401
    assert (await client.get("/admin/keys", headers=bearer("wrong"))).status_code == 401
    response = await client.get("/admin/keys", headers=bearer(key.secret))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
    assert response.headers["x-should-retry"] == "false"


async def test_admin_api_manages_keys_and_reads_usage(client: httpx.AsyncClient) -> None:
    admin = bearer(ADMIN)
    created = await client.post("/admin/keys", json={"name": "bob", "credits": 5, "rpm": 60}, headers=admin)
    assert created.status_code == 201, created.text
    key: dict[str, Any] = created.json()
    assert key["secret"].startswith("es-") and key["credits"] == 5
    listed = (await client.get("/admin/keys", headers=admin)).json()["data"]
    assert key["id"] in {k["id"] for k in listed} and all("secret" not in k for k in listed)
    topped = await client.post(f"/admin/keys/{key['id']}/credits", json={"amount": 10}, headers=admin)
    assert topped.json()["credits"] == 15
    assert (await client.post("/v1/embeddings", json=SEED, headers=bearer(key["secret"]))).status_code == 200
    usage = (await client.get("/admin/usage", headers=admin)).json()["data"]
    assert [(u["key_id"], u["requests"], u["tokens"], u["credits"]) for u in usage] == [(key["id"], 1, 7, 1)]
    csv_text = (await client.get("/admin/usage?format=csv", headers=admin)).text
    assert csv_text.splitlines()[0] == "day,key_id,key_name,requests,inputs,tokens,credits"
    revoked = await client.delete(f"/admin/keys/{key['id']}", headers=admin)
    assert revoked.json()["revoked"] is True
    assert (await client.post("/v1/embeddings", json=SEED, headers=bearer(key["secret"]))).status_code == 401
    missing = await client.post("/admin/keys/key_nope/revoke", headers=admin)
    assert missing.status_code == 404


async def test_no_auth_serves_any_bearer_but_not_the_admin_api(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, auth=False)
    application = create_app(settings, engine=stub_engine())
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            ok = await client.post("/v1/embeddings", json=SEED, headers=bearer("anything"))
            assert ok.status_code == 200 and ok.json()["meta"]["usage"]["credits_used"] == 1
            assert (await client.get("/admin/keys", headers=bearer("anything"))).status_code == 503
    assert not (tmp_path / "embedserve.db").exists()


@pytest.mark.parametrize(("path", "body"), [("/tokenize", {"inputs": "Laura is a DJ."}), ("/decode", {"ids": [6874]})])
async def test_tokenizer_routes_need_a_key_charge_nothing_and_are_rate_limited(
    app: FastAPI, client: httpx.AsyncClient, path: str, body: dict[str, Any]
) -> None:
    assert (await client.post(path, json=body)).status_code == 401
    key = await gw(app).keys.create(name="tok", credits=0, rpm=2)  # no credits at all: tokenizing is free
    first = await client.post(path, json=body, headers=bearer(key.secret))
    assert first.status_code == 200, first.text
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert (await client.post(path, json=body, headers=bearer(key.secret))).status_code == 200
    limited = await client.post(path, json=body, headers=bearer(key.secret))
    assert limited.status_code == 429 and "requests" in limited.json()["error"]["message"]
    assert (await gw(app).keys.get(key.info.id)).credits == 0
    assert await usage_report(gw(app).store, now=time.time(), days=1, key_id=key.info.id) == []


async def test_a_key_sees_its_own_balance_and_limits_never_its_secret(app: FastAPI, client: httpx.AsyncClient) -> None:
    key = await gw(app).keys.create(name="carol", credits=10, rpm=100, tpm=5000)
    embedded = await client.post("/v1/embeddings", json=SEED, headers=bearer(key.secret))
    assert embedded.headers["x-embedserve-credits-remaining"] == "9"
    r = await client.get("/v1/key", headers=bearer(key.secret))
    assert r.status_code == 200
    assert r.json() == {
        "object": "api_key",
        "id": key.info.id,
        "name": "carol",
        "credits": 9,
        "limits": {"rpm": 100, "tpm": 5000},
    }
    assert key.secret not in r.text and (await client.get("/v1/key")).status_code == 401
    unlimited = await gw(app).keys.create(name="dave")
    response = await client.post("/v1/embeddings", json=SEED, headers=bearer(unlimited.secret))
    assert "x-embedserve-credits-remaining" not in response.headers
    assert (await client.get("/v1/key", headers=bearer(unlimited.secret))).json()["credits"] is None


async def test_the_402_names_the_key(app: FastAPI, client: httpx.AsyncClient) -> None:
    key = await gw(app).keys.create(name="broke", credits=0)
    response = await client.post("/v1/embeddings", json=SEED, headers=bearer(key.secret))
    assert response.status_code == 402 and key.info.id in response.json()["error"]["message"]
