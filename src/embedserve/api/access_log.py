"""The per-request record and what the middleware does with it when a request completes: count and time the
request (``embedserve_requests_total`` / ``_duration_seconds``) and write its one access line.

``RequestContextMiddleware`` opens a ``RequestRecord`` for every HTTP request and holds it in a context variable;
a route that knows the request's counts fills it through ``current_record()`` (the embeddings route sets ``inputs``,
``tokens`` and, from the engine's ``EmbedTiming``, ``queue_ms`` and ``inference_ms``); ``request_observer`` reads it
once the response is sent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass

from starlette.routing import Match
from starlette.types import Scope

from embedserve.logs import ACCESS_LOGGER, log_request
from embedserve.metrics import Metrics, observe_request

UNMATCHED_ROUTE = "<unmatched>"  # one label for every 404, so scanners cannot grow the series without bound


@dataclass(slots=True)
class RequestRecord:
    """What one request's access line says beyond method, path and status (``None``: not measured, left out).

    Mutable on purpose: the middleware creates it before the route runs and reads it after the route filled it."""

    request_id: str
    inputs: int | None = None
    tokens: int | None = None
    queue_ms: float | None = None
    inference_ms: float | None = None


_current: ContextVar[RequestRecord | None] = ContextVar("embedserve_request_record", default=None)

OnComplete = Callable[[Scope, RequestRecord, int, float], None]


def open_record(request_id: str) -> RequestRecord:
    """A fresh record for the request now starting, current in this context (and the tasks it starts)."""
    record = RequestRecord(request_id=request_id)
    _current.set(record)
    return record


def current_record() -> RequestRecord:
    """The record of the request being served; outside a request (a unit test calling a route), a throwaway one."""
    record = _current.get()
    return record if record is not None else RequestRecord(request_id="")


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


def request_observer(metrics: Metrics) -> OnComplete:
    """The middleware's ``on_complete``: count and time the request, and write its access line.

    The key id comes from ``scope["state"]["principal"]`` (set by the auth dependency), the counts from the record.
    """
    access = logging.getLogger(ACCESS_LOGGER)

    def on_complete(scope: Scope, record: RequestRecord, status: int, seconds: float) -> None:
        observe_request(metrics, route=route_label(scope), status=status, seconds=seconds)
        state: dict[str, object] = scope.get("state", {})
        log_request(
            access,
            request_id=record.request_id,
            key_id=getattr(state.get("principal"), "key_id", None),
            method=str(scope.get("method", "")),
            path=str(scope.get("path", "")),
            status=status,
            inputs=record.inputs,
            tokens=record.tokens,
            duration_ms=seconds * 1000,
            queue_ms=record.queue_ms,
            inference_ms=record.inference_ms,
        )

    return on_complete
