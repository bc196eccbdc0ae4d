"""The access line of a real request through the whole app: the embeddings route's counts and engine timings reach
it, other routes carry none, and no input text is ever in it. (test_multiproc_api.py runs these again with the
engine in its own process.)"""

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


async def test_an_embeddings_request_logs_its_queue_and_inference_time_within_its_duration(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="embedserve.access"):
        resp = await client.post("/v1/embeddings", json={"input": ["Laura is a DJ.", "hello world", "a third"]})
    assert resp.status_code == 200
    (fields,) = _access_fields(caplog)
    queue_ms, inference_ms, duration_ms = (fields[k] for k in ("queue_ms", "inference_ms", "duration_ms"))
    assert isinstance(queue_ms, float) and isinstance(inference_ms, float) and isinstance(duration_ms, float)
    assert queue_ms >= 0 and inference_ms >= 0
    assert queue_ms + inference_ms <= duration_ms


async def test_a_request_that_fails_or_is_not_an_embedding_logs_no_counts(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="embedserve.access"):
        empty = await client.post("/v1/embeddings", json={"input": []})
        models = await client.get("/v1/models")
    assert [empty.status_code, models.status_code] == [400, 200]
    for fields in _access_fields(caplog):
        assert not {"inputs", "tokens", "queue_ms", "inference_ms"} & set(fields)
    assert len(_access_fields(caplog)) == 2
