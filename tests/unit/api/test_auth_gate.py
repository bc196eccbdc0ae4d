"""The key gate: a keyed POST or an admin path without a valid key is answered before the app reads its body."""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx
from fastapi import FastAPI, Request

from embedserve import errors
from embedserve.api.auth_gate import AuthGateMiddleware
from embedserve.api.errors import install_error_handlers


@dataclass
class FakeGateway:
    seen: list[str | None] = field(default_factory=list)

    async def authenticate(self, token: str | None) -> object:
        self.seen.append(token)
        if token != "good":
            raise errors.AuthenticationError("Incorrect API key provided.")
        return type("Principal", (), {"key_id": "key_good"})()

    async def authenticate_admin(self, token: str | None) -> None:
        self.seen.append(token)
        if token != "admin":
            raise errors.PermissionDeniedError("This route needs the admin key.")


def _client() -> tuple[httpx.AsyncClient, FakeGateway, list[str]]:
    app, gateway, reached = FastAPI(), FakeGateway(), []
    app.state.gateway = gateway
    install_error_handlers(app)
    app.add_middleware(AuthGateMiddleware)

    @app.post("/v1/embeddings")
    async def _embed(request: Request) -> dict[str, object]:
        reached.append(f"embed {len(await request.body())}")
        return {"key_id": request.state.principal.key_id}

    @app.get("/v1/models")
    async def _models() -> dict[str, str]:
        reached.append("models")
        return {}

    @app.get("/admin/keys")
    async def _keys(request: Request) -> dict[str, bool]:
        reached.append("admin")
        return {"admin": request.state.admin}

    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="http://test"), gateway, reached


async def test_a_keyless_post_is_refused_and_the_connection_closed_before_the_route_runs() -> None:
    client, _, reached = _client()
    async with client:
        response = await client.post("/v1/embeddings", content=b"x" * 100_000)
    assert response.status_code == 401 and response.headers["connection"] == "close"
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert reached == []


async def test_a_valid_key_reaches_the_route_with_its_principal() -> None:
    client, gateway, reached = _client()
    async with client:
        response = await client.post("/v1/embeddings", content=b"abc", headers={"Authorization": "Bearer good"})
    assert response.status_code == 200 and response.json() == {"key_id": "key_good"}
    assert gateway.seen == ["good"] and reached == ["embed 3"]


async def test_an_unkeyed_route_is_not_gated() -> None:
    client, gateway, reached = _client()
    async with client:
        response = await client.get("/v1/models")
    assert response.status_code == 200 and gateway.seen == [] and reached == ["models"]


async def test_admin_paths_need_the_admin_key_not_a_user_key() -> None:
    client, _, reached = _client()
    async with client:
        user = await client.get("/admin/keys", headers={"Authorization": "Bearer good"})
        admin = await client.get("/admin/keys", headers={"Authorization": "Bearer admin"})
    assert user.status_code == 403 and user.headers["connection"] == "close"
    assert admin.status_code == 200 and admin.json() == {"admin": True}
    assert reached == ["admin"]


async def test_a_non_bearer_authorization_header_counts_as_no_key() -> None:
    client, gateway, _ = _client()
    async with client:
        response = await client.post("/v1/embeddings", content=b"{}", headers={"Authorization": "Basic good"})
    assert response.status_code == 401 and gateway.seen == [None]
