"""``GET /metrics`` on the main port behind the admin key; the same registry openly on ``--metrics-port``.

The app's ``Metrics`` lives on ``app.state.metrics``; ``route_label`` gives middleware a bounded route label.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any
from wsgiref.simple_server import WSGIServer, make_server

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from prometheus_client import make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler
from starlette.routing import Match
from starlette.types import Scope

from embedserve.api.deps import require_admin
from embedserve.logs import ACCESS_LOGGER, log_request
from embedserve.metrics import Metrics, observe_request, render

router = APIRouter(tags=["operations"])

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

UNMATCHED_ROUTE = "<unmatched>"  # one label for every 404, so scanners cannot grow the series without bound


@router.get("/metrics", include_in_schema=False)
async def metrics_endpoint(request: Request, _: Annotated[None, Depends(require_admin)]) -> Response:
    metrics: Metrics = request.app.state.metrics
    body, content_type = render(metrics)
    return Response(body, media_type=content_type)


def route_label(scope: Scope) -> str:
    """The route template that served ``scope`` (``/v1/models/{model_id:path}``), or ``<unmatched>``."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    app = scope.get("app")
    for candidate in getattr(getattr(app, "router", None), "routes", ()):
        match, _ = candidate.matches(scope)
        if match is Match.FULL:
            return str(getattr(candidate, "path", UNMATCHED_ROUTE))
    return UNMATCHED_ROUTE


def _optional(state: dict[str, object], name: str) -> float | None:
    value = state.get(name)
    return float(value) if isinstance(value, int | float) else None


def request_observer(metrics: Metrics) -> Callable[[Scope, int, float], None]:
    """The middleware's ``on_complete``: count and time the request, and write its access line.

    Reads ``scope["state"]``: ``request_id``, ``principal`` (auth dependency) and, when the embeddings route
    sets them on ``request.state``, ``inputs``, ``tokens``, ``queue_ms`` and ``inference_ms``.
    """
    access = logging.getLogger(ACCESS_LOGGER)

    def on_complete(scope: Scope, status: int, seconds: float) -> None:
        observe_request(metrics, route=route_label(scope), status=status, seconds=seconds)
        state: dict[str, object] = scope.get("state", {})
        inputs, tokens = _optional(state, "inputs"), _optional(state, "tokens")
        log_request(
            access,
            request_id=str(state.get("request_id", "")),
            key_id=getattr(state.get("principal"), "key_id", None),
            method=str(scope.get("method", "")),
            path=str(scope.get("path", "")),
            status=status,
            inputs=None if inputs is None else int(inputs),
            tokens=None if tokens is None else int(tokens),
            duration_ms=seconds * 1000,
            queue_ms=_optional(state, "queue_ms"),
            inference_ms=_optional(state, "inference_ms"),
        )

    return on_complete


@dataclass(slots=True)
class MetricsServer:
    """The open ``--metrics-port`` listener (a prometheus_client WSGI server on a daemon thread)."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def only_metrics_path(app: WSGIApp) -> WSGIApp:
    """prometheus_client answers every path with the metrics; this port answers ``/metrics`` and 404s the rest."""

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "") in ("/metrics", "/metrics/"):
            return app(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"Not found: this port serves only /metrics.\n"]

    return guarded


def serve_metrics_port(metrics: Metrics, *, host: str, port: int) -> MetricsServer:
    """Serve ``metrics`` without auth on ``host:port`` (0 picks a free port), at ``/metrics`` only (any other path
    is a 404); ``close()`` it on shutdown."""
    app = only_metrics_path(make_wsgi_app(metrics.registry))
    server = make_server(host, port, app, ThreadingWSGIServer, handler_class=_SilentHandler)
    thread = threading.Thread(target=server.serve_forever, name="embedserve-metrics-port", daemon=True)
    thread.start()
    return MetricsServer(server=server, thread=thread)
