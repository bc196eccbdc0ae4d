"""The access line of a real request through the whole app: the embeddings route's counts reach it, other routes
carry none, and no input text is ever in it."""

from __future__ import annotations

import logging

import httpx
import pytest

from embedserve.logs import FIELDS_ATTR


def _access_fields(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [getattr(r, FIELDS_ATTR) for r in caplog.records if r.name == "embedserve.access"]


async def test_an_embeddings_request_logs_its_input_and_token_counts(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="embedserve.access"):
        resp = await client.post("/v1/embeddings", json={"input": ["Laura is a DJ.", "hello world"]})
    assert resp.status_code == 200
    (fields,) = _access_fields(caplog)
    assert fields["inputs"] == 2 and fields["tokens"] == resp.json()["usage"]["prompt_tokens"]
    assert fields["request_id"] == resp.headers["x-request-id"] and fields["status"] == 200
    assert "Laura" not in repr(fields)


async def test_a_request_that_fails_or_is_not_an_embedding_logs_no_counts(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="embedserve.access"):
        empty = await client.post("/v1/embeddings", json={"input": []})
        models = await client.get("/v1/models")
    assert [empty.status_code, models.status_code] == [400, 200]
    for fields in _access_fields(caplog):
        assert "inputs" not in fields and "tokens" not in fields
    assert len(_access_fields(caplog)) == 2
