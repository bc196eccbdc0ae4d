"""The metrics module: per-app registries, helper semantics, exposition, the admin guard and the open port."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from embedserve import errors
from embedserve.api.access_log import UNMATCHED_ROUTE, RequestRecord, request_observer, route_label
from embedserve.api.routes.metrics import router
from embedserve.metrics import (
    Metrics,
    observe_abandoned_decode,
    observe_batch,
    observe_error,
    observe_queue_wait,
    observe_ray_lines,
    observe_request,
    observe_tokenization,
    observe_usage,
    render,
    set_model_info,
    set_queue,
    track_queue,
)
from embedserve.metrics_port import serve_metrics_port, serve_metrics_socket
from embedserve.settings import Settings


def value(m: Metrics, name: str, labels: dict[str, str] | None = None) -> float:
    result = m.registry.get_sample_value(name, labels or {})
    assert result is not None, f"no sample {name}{labels}"
    return result


def test_two_apps_in_one_process_do_not_collide() -> None:
    a, b = Metrics.create(), Metrics.create()
    observe_request(a, route="/v1/embeddings", status=200, seconds=0.01)
    assert value(a, "embedserve_requests_total", {"route": "/v1/embeddings", "status": "200"}) == 1
    assert (
        b.registry.get_sample_value("embedserve_requests_total", {"route": "/v1/embeddings", "status": "200"}) is None
    )


def test_requests_are_counted_by_route_and_status_with_durations() -> None:
    m = Metrics.create(process=False)
    for status, seconds in ((200, 0.004), (200, 0.3), (401, 0.001)):
        observe_request(m, route="/v1/embeddings", status=status, seconds=seconds)
    observe_request(m, route="/v1/models", status=200, seconds=0.002)
    assert value(m, "embedserve_requests_total", {"route": "/v1/embeddings", "status": "200"}) == 2
    assert value(m, "embedserve_requests_total", {"route": "/v1/embeddings", "status": "401"}) == 1
    assert value(m, "embedserve_request_duration_seconds_count", {"route": "/v1/embeddings"}) == 3
    assert value(m, "embedserve_request_duration_seconds_sum", {"route": "/v1/embeddings"}) == pytest.approx(0.305)
    le_5ms = {"route": "/v1/embeddings", "le": "0.005"}
    assert value(m, "embedserve_request_duration_seconds_bucket", le_5ms) == 2


def test_batches_fill_size_token_and_inference_histograms() -> None:
    m = Metrics.create(process=False)
    observe_batch(m, size=3, tokens=48, seconds=0.02)
    observe_batch(m, size=256, tokens=16384, seconds=1.5, queue_seconds=0.2)
    assert value(m, "embedserve_batch_size_count") == 2
    assert value(m, "embedserve_batch_size_sum") == 259
    assert value(m, "embedserve_batch_size_bucket", {"le": "4.0"}) == 1
    assert value(m, "embedserve_batch_tokens_sum") == 16432
    assert value(m, "embedserve_batch_tokens_bucket", {"le": "64.0"}) == 1
    assert value(m, "embedserve_inference_duration_seconds_count") == 2
    assert value(m, "embedserve_inference_duration_seconds_bucket", {"le": "0.025"}) == 1
    assert value(m, "embedserve_queue_wait_seconds_count") == 1
    assert value(m, "embedserve_queue_wait_seconds_sum") == pytest.approx(0.2)


def test_queue_and_tokenisation_observations() -> None:
    m = Metrics.create(process=False)
    observe_queue_wait(m, 0.003)
    observe_tokenization(m, 0.0004)
    set_queue(m, depth=12, tokens=900)
    set_queue(m, depth=5, tokens=300)
    assert value(m, "embedserve_queue_wait_seconds_count") == 1
    assert value(m, "embedserve_tokenization_duration_seconds_bucket", {"le": "0.0005"}) == 1
    assert value(m, "embedserve_queue_depth") == 5
    assert value(m, "embedserve_queued_tokens") == 300


def test_queue_gauges_can_read_the_engine_at_scrape_time() -> None:
    m = Metrics.create(process=False)
    queue = {"depth": 3, "tokens": 120}
    track_queue(m, depth=lambda: queue["depth"], tokens=lambda: queue["tokens"])
    assert value(m, "embedserve_queue_depth") == 3
    queue.update(depth=0, tokens=0)
    assert value(m, "embedserve_queue_depth") == 0 and value(m, "embedserve_queued_tokens") == 0


def test_usage_is_counted_by_key_id_and_anonymous_without_auth() -> None:
    m = Metrics.create(process=False)
    observe_usage(m, key_id="key_abc", inputs=2, tokens=14, credits=1)
    observe_usage(m, key_id="key_abc", inputs=1, tokens=7, credits=1)
    observe_usage(m, key_id=None, inputs=1, tokens=5, credits=0)
    assert value(m, "embedserve_tokens_total", {"key_id": "key_abc"}) == 21
    assert value(m, "embedserve_credits_total", {"key_id": "key_abc"}) == 2
    assert value(m, "embedserve_inputs_total", {"key_id": "key_abc"}) == 3
    assert value(m, "embedserve_tokens_total", {"key_id": "anonymous"}) == 5


@pytest.mark.parametrize(
    "error",
    [
        errors.AuthenticationError("x"),
        errors.ContextLengthExceededError("x"),
        errors.ServerOverloadedError("x"),
    ],
)
def test_errors_are_counted_by_type_and_code(error: errors.EmbedServeError) -> None:
    m = Metrics.create(process=False)
    observe_error(m, type=error.type, code=error.code)
    observe_error(m, type=error.type, code=error.code)
    assert value(m, "embedserve_errors_total", {"type": error.type, "code": str(error.code)}) == 2


def test_batch_lines_on_ray_are_counted_by_node() -> None:
    m = Metrics.create(process=False)
    assert m.registry.get_sample_value("embedserve_batch_lines_on_ray_total", {"node": "a1"}) is None
    observe_ray_lines(m, node="a1", lines=3)
    observe_ray_lines(m, node="a1", lines=2)
    observe_ray_lines(m, node="b2", lines=1)
    assert value(m, "embedserve_batch_lines_on_ray_total", {"node": "a1"}) == 5
    assert value(m, "embedserve_batch_lines_on_ray_total", {"node": "b2"}) == 1


def test_abandoned_body_decodes_are_counted_by_how_from_zero() -> None:
    m = Metrics.create()
    for how in ("skipped", "killed"):  # both series exist before the first hang-up, so a rate sees its first one
        assert value(m, "embedserve_body_decodes_abandoned_total", {"how": how}) == 0
    observe_abandoned_decode(m, how="killed")
    observe_abandoned_decode(m, how="skipped")
    observe_abandoned_decode(m, how="skipped")
    assert value(m, "embedserve_body_decodes_abandoned_total", {"how": "killed"}) == 1
    assert value(m, "embedserve_body_decodes_abandoned_total", {"how": "skipped"}) == 2


def test_render_exposes_every_metric_with_the_embedserve_prefix() -> None:
    m = Metrics.create()
    set_model_info(m, model="bge", backend="torch", dtype="float32", device="cpu", dim=1024)
    body, content_type = render(m)
    text = body.decode()
    assert content_type.startswith("text/plain")
    own = {line.split()[2] for line in text.splitlines() if line.startswith("# HELP embedserve")}
    own = {name.removesuffix("_total").removesuffix("_created") for name in own}
    assert own == {
        "embedserve_requests", "embedserve_request_duration_seconds",
        "embedserve_queue_wait_seconds", "embedserve_tokenization_duration_seconds",
        "embedserve_inference_duration_seconds", "embedserve_batch_size", "embedserve_batch_tokens",
        "embedserve_queue_depth", "embedserve_queued_tokens", "embedserve_tokens", "embedserve_credits",
        "embedserve_inputs", "embedserve_errors", "embedserve_model_info", "embedserve_batch_lines_on_ray",
        "embedserve_body_decodes_abandoned",
    }  # fmt: skip
    assert 'embedserve_model_info{backend="torch",device="cpu",dim="1024"' in text
    assert "process_cpu_seconds_total" in text


class _AdminGateway:
    async def authenticate_admin(self, bearer: str | None) -> None:
        if bearer != "admin-secret":
            raise errors.AuthenticationError("Incorrect admin key.")


def _app(metrics: Metrics) -> FastAPI:
    app = FastAPI()
    app.state.metrics = metrics
    app.state.gateway = _AdminGateway()
    app.include_router(router)

    @app.exception_handler(errors.EmbedServeError)
    async def _handle(request: Request, exc: errors.EmbedServeError) -> JSONResponse:
        return JSONResponse({"error": {"message": exc.message}}, status_code=exc.status)

    return app


async def test_metrics_endpoint_requires_the_admin_key() -> None:
    m = Metrics.create(process=False)
    observe_request(m, route="/v1/embeddings", status=200, seconds=0.01)
    transport = httpx.ASGITransport(app=_app(m))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        denied = await client.get("/metrics", headers={"Authorization": "Bearer nope"})
        allowed = await client.get("/metrics", headers={"Authorization": "Bearer admin-secret"})
    assert denied.status_code == 401
    assert allowed.status_code == 200
    assert 'embedserve_requests_total{route="/v1/embeddings",status="200"} 1.0' in allowed.text


def test_route_label_uses_the_template_and_bounds_unknown_paths() -> None:
    app = _app(Metrics.create(process=False))

    @app.get("/v1/models/{model_id:path}")
    async def _model(model_id: str) -> None: ...

    def scope(path: str) -> dict[str, object]:
        return {"type": "http", "method": "GET", "path": path, "root_path": "", "app": app, "headers": []}

    assert route_label(scope("/v1/models/BAAI/bge-large-en-v1.5")) == "/v1/models/{model_id:path}"
    assert route_label(scope("/wp-admin.php")) == UNMATCHED_ROUTE


@pytest.mark.parametrize(("host", "url_host"), [("127.0.0.1", "127.0.0.1"), ("::1", "[::1]")])
def test_metrics_port_serves_the_same_registry_openly(host: str, url_host: str) -> None:
    if ":" in host:
        try:
            with socket.socket(socket.AF_INET6) as probe:
                probe.bind((host, 0))
        except OSError as exc:
            pytest.skip(f"no IPv6 loopback on this host: {exc}")
    m = Metrics.create(process=False)
    observe_usage(m, key_id="key_1", inputs=1, tokens=7, credits=1)
    server = serve_metrics_port(m, host=host, port=0)
    try:
        with urllib.request.urlopen(f"http://{url_host}:{server.port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    finally:
        server.close()
    assert 'embedserve_tokens_total{key_id="key_1"} 7.0' in text


def test_metrics_socket_serves_on_a_socket_bound_before() -> None:
    """--api-processes: the parent binds the port, the engine process serves the registry on it."""
    m = Metrics.create(process=False)
    observe_usage(m, key_id="key_2", inputs=1, tokens=9, credits=1)
    sock = socket.create_server(("127.0.0.1", 0))
    server = serve_metrics_socket(m, sock)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/", timeout=5)
        err.value.close()
    finally:
        server.close()
    assert 'embedserve_tokens_total{key_id="key_2"} 9.0' in text and err.value.code == 404
    assert sock.fileno() == -1  # closed with the listener


@pytest.mark.parametrize("path", ["/v1/embeddings", "/", "/admin/keys", "/metricsx"])
def test_metrics_port_serves_nothing_but_metrics(path: str) -> None:
    server = serve_metrics_port(Metrics.create(process=False), host="127.0.0.1", port=0)
    try:
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=5)
    finally:
        server.close()
    err.value.close()
    assert err.value.code == 404


def test_request_observer_counts_by_template_and_logs_without_text(caplog: pytest.LogCaptureFixture) -> None:
    m = Metrics.create(process=False)
    app = _app(m)

    @app.post("/v1/embeddings")
    async def _embed() -> None: ...

    principal = type("P", (), {"key_id": "key_7"})()
    record = RequestRecord(request_id="req_x", inputs=2, tokens=14, queue_ms=0.5)
    scope = {"type": "http", "method": "POST", "path": "/v1/embeddings", "root_path": "", "app": app}
    with caplog.at_level("INFO", logger="embedserve.access"):
        request_observer(m)({**scope, "headers": [], "state": {"principal": principal}}, record, 200, 0.02)
    assert value(m, "embedserve_requests_total", {"route": "/v1/embeddings", "status": "200"}) == 1
    (line,) = caplog.records
    fields = line.__dict__["embedserve_fields"]
    assert fields == {
        "request_id": "req_x", "key_id": "key_7", "method": "POST", "path": "/v1/embeddings", "status": 200,
        "inputs": 2, "tokens": 14, "duration_ms": 20.0, "queue_ms": 0.5,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("metrics_port", "port", "reason"), [(70000, 8000, "less than or equal to 65535"), (8000, 8000, "the main port")]
)
def test_a_metrics_port_out_of_range_or_on_the_main_port_is_refused(metrics_port: int, port: int, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        Settings(metrics_port=metrics_port, port=port)
