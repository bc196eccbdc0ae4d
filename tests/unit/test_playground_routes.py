"""The playground's routes: the page, its assets, a strict same-origin CSP, and no external URL anywhere."""

from __future__ import annotations

import re

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from embedserve import errors
from embedserve.api.routes.playground import ASSETS, router


def _app() -> FastAPI:
    app = FastAPI()
    app.include_router(router)

    @app.exception_handler(errors.EmbedServeError)
    async def _handle(request: Request, exc: errors.EmbedServeError) -> JSONResponse:
        return JSONResponse({"error": {"message": exc.message}}, status_code=exc.status)

    return app


@pytest.fixture
async def client() -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=_app()), base_url="http://t")


@pytest.mark.parametrize("path", ["/", "/playground"])
async def test_the_page_is_served_with_a_same_origin_csp(client: httpx.AsyncClient, path: str) -> None:
    resp = await client.get(path)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
    assert "connect-src 'self'" in resp.headers["content-security-policy"]
    assert '<script type="module" src="/static/playground.js">' in resp.text


@pytest.mark.parametrize(("name", "kind"), [("playground.js", "text/javascript"), ("playground.css", "text/css")])
async def test_assets_have_their_types(client: httpx.AsyncClient, name: str, kind: str) -> None:
    resp = await client.get(f"/static/{name}")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith(kind)


async def test_unknown_assets_are_404_not_files_from_disk(client: httpx.AsyncClient) -> None:
    for path in ("/static/nope.js", "/static/..%2F__init__.py", "/static/%2E%2E%2Froutes%2Fplayground.py"):
        assert (await client.get(path)).status_code == 404


async def test_no_asset_references_another_origin(client: httpx.AsyncClient) -> None:
    for name in ASSETS:
        text = (await client.get(f"/static/{name}")).text
        # The only absolute URL allowed is the copy-paste base built from location.origin at run time.
        assert not re.findall(r"(?:src|href|url)\s*[=(]\s*[\"']?(?:https?:)?//", text), name
        assert "cdn" not in text.lower(), name
