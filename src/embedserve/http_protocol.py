"""uvicorn's httptools protocol with the guards it lacks: header and body read deadlines, a connection cap, and
its protocol-level 400 (a malformed request line, a bad ``Content-Length``) in the OpenAI envelope.

uvicorn has no header-read timeout: a client that trickles its headers holds a connection, and a file descriptor,
forever (1,100 such connections under a 1,024 file limit made a normal request wait 29 s). Here a request must send
its headers within ``header_timeout`` of its first byte (or of the connection opening), and no more than
``body_timeout`` may pass without a byte of its body (an inactivity timeout, re-armed by each body chunk: a 200 MB
upload at a steady 1 MB/s is fine, a stalled one is cut; time the server itself spends not reading, under flow
control, does not count);
past ``max_connections`` open connections a new one is answered 503 and closed at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

logger = logging.getLogger(__name__)


def _envelope(status: int, reason: bytes, message: str, code: str, extra: bytes = b"") -> bytes:
    kind = "invalid_request_error" if status < 500 else "server_error"
    body = json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}}).encode()
    head = b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n%s\r\n" % (
        status,
        reason,
        len(body),
        extra,
    )
    return head + body


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    max_connections: int = 1000

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._waiting_for = ""
        self._last_body = 0.0  # loop time of the last body chunk: the body deadline counts from it

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            logger.warning(
                "refusing a connection: %d open, the limit is %d", len(self.connections), self.max_connections
            )
            message = "This server has too many open connections; retry shortly."
            transport.write(
                _envelope(503, b"Service Unavailable", message, "too_many_connections", b"retry-after: 1\r\n")
            )
            transport.close()
            return
        self._arm(self.header_timeout, "headers")

    def _arm(self, seconds: float, waiting_for: str) -> None:
        self._disarm()
        self._waiting_for = waiting_for
        self._deadline = self.loop.call_later(seconds, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self._waiting_for == "body" and self.flow.read_paused:  # we are the slow side: wait with the client
            self._arm(self.body_timeout, "body")
            return
        if self._waiting_for == "body":  # bytes came meanwhile: wait body_timeout from the last of them
            left = self._last_body + self.body_timeout - self.loop.time()
            if left > 0:
                self._arm(left, "body")
                return
        logger.info("closing a connection that did not send its %s in time", self._waiting_for)
        self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:  # a kept-alive connection's next request: its headers are due too
            self._arm(self.header_timeout, "headers")

    def on_headers_complete(self) -> None:
        self._last_body = self.loop.time()
        self._arm(self.body_timeout, "body")
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._last_body = self.loop.time()  # cheaper than re-arming a timer per chunk; _expire reads it
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        self.transport.write(_envelope(400, b"Bad Request", f"Malformed HTTP request: {msg}", "invalid_http_request"))
        self.transport.close()


def guarded_protocol(*, header_timeout: float, body_timeout: float, max_connections: int) -> type[HttpToolsProtocol]:
    return type(
        "GuardedHttpToolsProtocol",
        (GuardedHttpToolsProtocol,),
        {"header_timeout": header_timeout, "body_timeout": body_timeout, "max_connections": max_connections},
    )
