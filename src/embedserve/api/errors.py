"""Every error leaves as the OpenAI envelope ``{"error": {message, type, param, code}}``; the only status table.

Exceptions from our tree carry their status; FastAPI's validation errors and Starlette's routing errors are mapped
here. Unexpected exceptions are handled in the middleware (generic 500 with the request id, traceback logged).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from embedserve import errors
from embedserve.api.headers import error_headers
from embedserve.api.protocol import error_body
from embedserve.metrics import observe_error

# Statuses the official SDKs should not retry; 408/409/429/5xx are retried by them and keep their default.
_NO_RETRY = frozenset({400, 401, 402, 403, 404, 405, 413, 422})

_HTTP_STATUS_ERRORS: dict[int, type[errors.EmbedServeError]] = {
    404: errors.NotFoundError,
    405: errors.MethodNotAllowedError,
    413: errors.RequestTooLargeError,
}


def error_response(exc: errors.EmbedServeError, request: Request | None = None) -> JSONResponse:
    if request is not None and hasattr(request.app.state, "metrics"):  # ops wiring: errors by type
        observe_error(request.app.state.metrics, type=exc.type, code=exc.code)
    headers = error_headers(exc)
    if exc.status in _NO_RETRY:
        headers.setdefault("x-should-retry", "false")
    body = error_body(message=exc.message, type=exc.type, param=exc.param, code=exc.code)
    return JSONResponse(body, status_code=exc.status, headers=headers)


def internal_error(request_id: str) -> errors.EmbedServeError:
    return errors.EmbedServeError(
        f"The server had an error while processing your request (request id {request_id}). "
        "It has been logged; retry, or report the request id to the operator."
    )


def describe_validation(exc: RequestValidationError) -> tuple[str, str | None]:
    first: dict[str, Any] = exc.errors()[0] if exc.errors() else {}
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    if first.get("type") == "json_invalid":
        return "We could not parse the JSON body of your request: it is not valid JSON.", None
    # Union types produce one error per branch; name the field once, with the first reason.
    field = loc[0] if loc else None
    where = ".".join(loc) if loc else "body"
    reason = first.get("msg", "is invalid")
    if field == "input":
        reason = "must be a non-empty string, a list of strings, a list of token ids, or a list of token-id lists"
        where = "input"
    return f"Invalid value for '{where}': {reason}.", field


async def _validation_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    message, param = describe_validation(exc)
    return error_response(errors.ValidationFailedError(message, param=param), request)


async def _embedserve_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.EmbedServeError)
    return error_response(exc, request)


async def _http_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    cls = _HTTP_STATUS_ERRORS.get(exc.status_code)
    if exc.status_code == 404:
        message = f"Unknown route: {request.method} {request.url.path}."
    elif exc.status_code == 405:
        message = f"Method {request.method} is not allowed on {request.url.path}."
    else:
        message = str(exc.detail)
    if cls is None:
        err: errors.EmbedServeError = errors.InvalidRequestError(message)
        return JSONResponse(
            error_body(message=message, type=err.type, param=None, code=None),
            status_code=exc.status_code,
            headers=dict(exc.headers or {}),
        )
    return error_response(cls(message, headers=dict(exc.headers or {})), request)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(errors.EmbedServeError, _embedserve_handler)
    app.add_exception_handler(StarletteHTTPException, _http_handler)
