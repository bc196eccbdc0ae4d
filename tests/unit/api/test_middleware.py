"""The request middleware as a client sees it: a request id on every response, bodies over the limit refused with
413 in the envelope (announced or streamed), a larger limit where a path has one, and a generic 500 for a crash."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI, Request

from embedserve.api.errors import install_error_handlers
from embedserve.api.middleware import RequestContextMiddleware

LIMIT = 1000


def _client(observed: list[tuple[str, int]] | None = None) -> httpx.AsyncClient:
    app = FastAPI()
    install_error_handlers(app)

    def on_complete(scope: object, record: object, status: int, seconds: float) -> None:
        if observed is not None:
            observed.append((getattr(record, "request_id", ""), status))

    app.add_middleware(
        RequestContextMiddleware, max_body_bytes=LIMIT, path_limits={"/v1/files": 10 * LIMIT}, on_complete=on_complete
    )

    @app.post("/v1/embeddings")
    @app.post("/v1/files")
    async def _echo(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    @app.get("/crash")
    async def _crash() -> None:
        raise RuntimeError("secret detail")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def _chunks(total: int, size: int = 100) -> AsyncIterator[bytes]:
    for _ in range(total // size):
        yield b"x" * size


async def test_a_body_at_the_limit_passes() -> None:
    async with _client() as client:
        response = await client.post("/v1/embeddings", content=b"x" * LIMIT)
    assert response.status_code == 200 and response.json() == {"bytes": LIMIT}


@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "chunked"])
async def test_a_body_over_the_limit_is_a_413_in_the_envelope(streamed: bool) -> None:
    content = _chunks(LIMIT + 100) if streamed else b"x" * (LIMIT + 1)
    async with _client() as client:
        response = await client.post("/v1/embeddings", content=content)
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "request_too_large" and f"limit of {LIMIT} bytes" in error["message"]
    assert response.headers["x-request-id"].startswith("req_")


async def test_a_path_with_its_own_limit_takes_a_larger_body() -> None:
    async with _client() as client:
        upload = await client.post("/v1/files", content=b"x" * (5 * LIMIT))
        too_big = await client.post("/v1/files", content=b"x" * (10 * LIMIT + 1))
    assert upload.status_code == 200
    assert too_big.status_code == 413 and f"limit of {10 * LIMIT} bytes" in too_big.json()["error"]["message"]


@pytest.mark.parametrize(
    ("sent", "echoed"), [("client-id.42:x", True), ("bad id with spaces", False), ("x" * 129, False)]
)
async def test_a_valid_client_request_id_is_echoed_and_an_invalid_one_replaced(sent: str, echoed: bool) -> None:
    observed: list[tuple[str, int]] = []
    async with _client(observed) as client:
        response = await client.post("/v1/embeddings", content=b"{}", headers={"x-request-id": sent})
    rid = response.headers["x-request-id"]
    assert (rid == sent) is echoed and (echoed or rid.startswith("req_"))
    assert observed == [(rid, 200)]


async def test_a_crash_is_a_generic_500_with_the_request_id_and_no_detail() -> None:
    observed: list[tuple[str, int]] = []
    async with _client(observed) as client:
        response = await client.get("/crash")
    rid = response.headers["x-request-id"]
    assert response.status_code == 500
    message = response.json()["error"]["message"]
    assert rid in message and "secret detail" not in message
    assert observed == [(rid, 500)]
