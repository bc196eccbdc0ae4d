"""``/metrics`` on the whole app: after known requests, counters and histograms hold the expected counts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _samples(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _get(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_counters_and_histograms_after_known_requests(make_client: Callable[..., Any]) -> None:
    client: httpx.AsyncClient = await make_client()
    two = await client.post("/v1/embeddings", json={"input": ["Laura is a DJ.", "hello world"]})
    one = await client.post("/v1/embeddings", json={"input": "Laura is a DJ."})
    empty = await client.post("/v1/embeddings", json={"input": []})
    missing = await client.get("/no/such/route")
    assert [two.status_code, one.status_code, empty.status_code, missing.status_code] == [200, 200, 400, 404]
    tokens = two.json()["usage"]["prompt_tokens"] + one.json()["usage"]["prompt_tokens"]
    credits = two.json()["meta"]["usage"]["credits_used"] + one.json()["meta"]["usage"]["credits_used"]

    resp = await client.get("/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    s = _samples(resp.text)
    route = "/v1/embeddings"
    assert _get(s, "embedserve_requests_total", route=route, status="200") == 2
    assert _get(s, "embedserve_requests_total", route=route, status="400") == 1
    assert _get(s, "embedserve_requests_total", route="<unmatched>", status="404") == 1
    assert _get(s, "embedserve_request_duration_seconds_count", route=route) == 3
    assert _get(s, "embedserve_errors_total", type="invalid_request_error", code="invalid_input") == 1
    assert _get(s, "embedserve_errors_total", type="invalid_request_error", code="not_found") == 1
    assert _get(s, "embedserve_tokens_total", key_id="anonymous") == tokens == 7 + 4 + 7
    assert _get(s, "embedserve_inputs_total", key_id="anonymous") == 3
    assert _get(s, "embedserve_credits_total", key_id="anonymous") == credits
    assert _get(s, "embedserve_tokenization_duration_seconds_count") == 2
    assert _get(s, "embedserve_batch_size_sum") == 3
    assert _get(s, "embedserve_batch_size_count") == _get(s, "embedserve_inference_duration_seconds_count") >= 1
    assert _get(s, "embedserve_batch_tokens_sum") >= tokens
    assert _get(s, "embedserve_queue_wait_seconds_count") == _get(s, "embedserve_batch_size_count")
    assert _get(s, "embedserve_queue_depth") == 0
