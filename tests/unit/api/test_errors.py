"""The status table: each error leaves as the OpenAI envelope with its status, and the retry headers the official
SDKs read (``x-should-retry: false`` where a retry cannot help, ``retry-after`` where the store is down)."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from embedserve import errors
from embedserve.api.errors import error_response, install_error_handlers, internal_error

NO_RETRY = [
    (errors.InvalidRequestError, 400),
    (errors.ContextLengthExceededError, 400),
    (errors.AuthenticationError, 401),
    (errors.InsufficientQuotaError, 402),
    (errors.PermissionDeniedError, 403),
    (errors.ModelNotFoundError, 404),
    (errors.RequestTooLargeError, 413),
]
RETRY = [
    (errors.RateLimitExceededError, 429),
    (errors.ServerOverloadedError, 503),
    (errors.EngineError, 500),
]


@pytest.mark.parametrize(("cls", "status"), NO_RETRY)
def test_a_client_error_says_do_not_retry(cls: type[errors.EmbedServeError], status: int) -> None:
    response = error_response(cls("nope", param="input"))
    assert response.status_code == status
    assert response.headers["x-should-retry"] == "false"


@pytest.mark.parametrize(("cls", "status"), RETRY)
def test_a_retryable_error_leaves_the_retry_to_the_client(cls: type[errors.EmbedServeError], status: int) -> None:
    response = error_response(cls("busy", headers={"retry-after": "2"}))
    assert response.status_code == status
    assert "x-should-retry" not in response.headers
    assert response.headers["retry-after"] == "2"


def test_an_unreachable_store_says_when_to_retry() -> None:
    response = error_response(errors.StoreUnavailableError("store down"))
    assert response.status_code == 503 and response.headers["retry-after"] == "5"


def test_the_body_is_the_openai_envelope() -> None:
    response = error_response(errors.ContextLengthExceededError("too long", param="input"))
    assert response.body == (
        b'{"error":{"message":"too long","type":"invalid_request_error","param":"input",'
        b'"code":"context_length_exceeded"}}'
    )


def test_an_internal_error_names_the_request_id_and_nothing_else() -> None:
    error = internal_error("req_abc")
    assert error.status == 500 and "req_abc" in error.message


class _Body(BaseModel):
    input: str
    dimensions: int = 0


def _app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/v1/embeddings")
    async def _embed(body: _Body) -> dict[str, str]:
        raise errors.InsufficientQuotaError("out of credits")

    return app


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code", "param"),
    [
        ("GET", "/nowhere", None, 404, "not_found", None),
        ("GET", "/v1/embeddings", None, 405, "method_not_allowed", None),
        ("POST", "/v1/embeddings", {"dimensions": 3}, 400, "invalid_request", "input"),
        ("POST", "/v1/embeddings", {"input": "x", "dimensions": "many"}, 400, "invalid_request", "dimensions"),
        ("POST", "/v1/embeddings", {"input": "x"}, 402, "insufficient_quota", None),
    ],
)
async def test_framework_and_route_errors_map_to_the_envelope(
    method: str, path: str, body: object, status: int, code: str, param: str | None
) -> None:
    transport = httpx.ASGITransport(app=_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.request(method, path, json=body)
    assert response.status_code == status
    error = response.json()["error"]
    assert (error["code"], error["param"]) == (code, param) and error["message"]


async def test_invalid_json_is_named_as_such() -> None:
    transport = httpx.ASGITransport(app=_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.post(
            "/v1/embeddings", content=b"{not json", headers={"content-type": "application/json"}
        )
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["error"]["message"]
