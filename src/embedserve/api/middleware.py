"""Pure-ASGI middleware around every request: request id, timing, body limit, and the last-resort 500.

It sits inside FastAPI's exception layer's reach, so anything the handlers did not map is caught here, logged with
its traceback, and answered with a generic OpenAI-shaped 500 that carries the request id.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Mapping

from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from embedserve import errors
from embedserve.api.access_log import OnComplete, open_record
from embedserve.api.errors import error_response, internal_error

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = "x-request-id"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def _client_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if _VALID_REQUEST_ID.match(text) else None
    return None


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class RequestContextMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        on_complete: OnComplete | None = None,
        path_limits: Mapping[str, int] | None = None,
    ) -> None:
        """``path_limits``: a body limit of its own for an exact path (file uploads are larger than requests)."""
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.on_complete = on_complete
        self.path_limits = dict(path_limits or {})

    def _too_large_message(self, limit: int) -> str:
        return f"The request body is larger than this server's limit of {limit} bytes."

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _client_request_id(scope) or f"req_{uuid.uuid4().hex}"
        scope.setdefault("state", {})["request_id"] = request_id
        record = open_record(request_id)
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        received = 0
        limit = self.path_limits.get(scope.get("path", ""), self.max_body_bytes)

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # An HTTPException passes through FastAPI's body parsing and reaches the 413 mapping.
                    raise HTTPException(413, detail=self._too_large_message(limit))
            return message

        try:
            length = _content_length(scope)
            if length is not None and length > limit:
                raise HTTPException(413, detail=self._too_large_message(limit))
            await self.app(scope, limited_receive, send_with_id)
        except HTTPException as exc:
            if not response_started:
                error = errors.RequestTooLargeError(str(exc.detail))
                await error_response(error, Request(scope))(scope, receive, send_with_id)
        except asyncio.CancelledError:
            # The server cancelled this request (its shutdown timeout ran out): answer in the envelope, not
            # uvicorn's plain-text 500. The embed work was cancelled and refunded on the way out.
            logger.warning("request %s cancelled by the server's shutdown", request_id)
            if not response_started:
                gone = errors.ServiceUnavailableError(
                    "The server shut down before this request finished; it was not charged. Retry.",
                    headers={"retry-after": "1", "connection": "close"},
                )
                await error_response(gone, Request(scope))(scope, receive, send_with_id)
        except Exception:
            logger.exception("unhandled error in request %s", request_id)
            if not response_started:
                await error_response(internal_error(request_id), Request(scope))(scope, receive, send_with_id)
        finally:
            if self.on_complete is not None:
                self.on_complete(scope, record, status, time.perf_counter() - started)
