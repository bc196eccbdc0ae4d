"""Every failure is the OpenAI envelope with a fitting status, type, code and param."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from embedserve.service import EmbeddingService

CASES: list[tuple[str, dict[str, Any] | str, int, str, str | None, str | None]] = [
    # (name, body, status, code, param, message fragment)
    ("empty list", {"input": []}, 400, "invalid_input", "input", "must not be empty"),
    ("empty string", {"input": ["a", ""]}, 400, "invalid_input", "input", "input[1] is an empty string"),
    ("empty id list", {"input": [[101, 102], []]}, 400, "invalid_input", "input", "input[1]"),
    ("out of vocab id", {"input": [[101, 5, 30522, 102]]}, 400, "invalid_input", "input", "30522"),
    ("not a cl100k id", {"input": [[5, 100300]]}, 400, "invalid_input", "input", "100300"),
    ("negative id", {"input": [1, -3]}, 400, "invalid_input", "input", "-3"),
    ("wrong type", {"input": 42}, 400, "invalid_request", "input", "input"),
    ("mixed list", {"input": ["a", 1]}, 400, "invalid_request", "input", "input"),
    ("missing input", {"model": "bge-large-en-v1.5"}, 400, "invalid_request", "input", "input"),
    (
        "bad encoding",
        {"input": "a", "encoding_format": "int8"},
        400,
        "invalid_request",
        "encoding_format",
        None,
    ),
    ("unknown model", {"input": "a", "model": "gpt-x"}, 404, "model_not_found", "model", "gpt-x"),
    ("bad dimensions", {"input": "a", "dimensions": 3}, 400, "invalid_dimensions", "dimensions", "1024"),
    ("invalid json", "{not json", 400, "invalid_request", None, "JSON"),
    # issue 16: these were a 500 (tokenizer error) and accepted as ids 1 and 0
    ("lone surrogate", '{"input": ["ok", "a\\ud800b"]}', 400, "invalid_input", "input", "not valid Unicode"),
    ("booleans as ids", {"input": [True, False]}, 400, "invalid_request", "input", "input"),
    ("nested booleans", {"input": [[101, True]]}, 400, "invalid_request", "input", "input"),
    ("string far past the context", {"input": "word " * 60_000}, 400, "context_length_exceeded", "input", "characters"),
]


@pytest.mark.parametrize(("name", "body", "status", "code", "param", "fragment"), CASES, ids=[c[0] for c in CASES])
async def test_bad_requests_get_openai_error_envelope(
    client: httpx.AsyncClient,
    name: str,
    body: dict[str, Any] | str,
    status: int,
    code: str,
    param: str | None,
    fragment: str | None,
) -> None:
    if isinstance(body, str):
        r = await client.post("/v1/embeddings", content=body, headers={"content-type": "application/json"})
    else:
        r = await client.post("/v1/embeddings", json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "invalid_request_error"
    assert err["code"] == code and err["param"] == param
    if fragment:
        assert fragment in err["message"]
    assert r.headers["x-should-retry"] == "false"
    assert r.headers["x-request-id"]


async def test_unknown_route_is_404_envelope(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/nothing")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found" and "/v1/nothing" in r.json()["error"]["message"]


async def test_wrong_method_is_405_envelope(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/embeddings")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


async def test_body_over_limit_is_413(make_client) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(max_body_bytes=2048)
    r = await client.post("/v1/embeddings", json={"input": "x" * 5000})
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "request_too_large" and "2048" in r.json()["error"]["message"]


async def test_streamed_body_over_limit_is_413(make_client) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(max_body_bytes=2048)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b'{"input": "' + b"x" * 500

    r = await client.post("/v1/embeddings", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


async def test_unexpected_error_is_generic_500_with_request_id(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def boom(self: EmbeddingService, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(EmbeddingService, "embed", boom)
    r = await client.post("/v1/embeddings", json={"input": "a"}, headers={"x-request-id": "trace-me"})
    assert r.status_code == 500
    err = r.json()["error"]
    assert err["type"] == "server_error" and "trace-me" in err["message"]
    assert "secret" not in r.text and "Traceback" not in r.text
    assert r.headers["x-request-id"] == "trace-me"
    assert "secret internals" in caplog.text
