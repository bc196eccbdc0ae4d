"""``/docs`` and ``/redoc`` load every asset from this server (vendored in the package), never from a CDN."""

from __future__ import annotations

import re

import httpx
import pytest


@pytest.mark.parametrize(("path", "script"), [("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")])
async def test_docs_pages_reference_only_this_server(client: httpx.AsyncClient, path: str, script: str) -> None:
    r = await client.get(path)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert not re.search(r"https?://", r.text), "the page reaches outside this server"
    urls = set(re.findall(r"""(?:src|href)=["'](/static/vendor/[^"']+)""", r.text))
    assert f"/static/vendor/{script}" in urls
    for url in urls:
        asset = await client.get(url)
        assert asset.status_code == 200 and asset.content, url
    bundle = await client.get(f"/static/vendor/{script}")
    assert bundle.headers["content-type"].startswith("text/javascript") and len(bundle.content) > 1_000_000


async def test_unknown_vendored_file_is_a_404_envelope(client: httpx.AsyncClient) -> None:
    r = await client.get("/static/vendor/../../settings.py")
    assert r.status_code == 404
    r = await client.get("/static/vendor/secret.txt")
    assert r.status_code == 404 and r.json()["error"]["type"]
