"""The body timeout is an inactivity timeout: a slow but steady upload finishes, a stalled one is cut."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from embedserve.http_protocol import guarded_protocol

BODY_TIMEOUT = 1.0


async def _count_body(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(size).encode()})


@pytest.fixture
def port() -> Iterator[int]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = int(probe.getsockname()[1])
    protocol = guarded_protocol(header_timeout=5, body_timeout=BODY_TIMEOUT, max_connections=10)
    server = uvicorn.Server(
        uvicorn.Config(_count_body, host="127.0.0.1", port=free, http=protocol, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    yield free
    server.should_exit = True
    thread.join(10)


def _upload(port: int, *, blocks: int, stop_after: int | None = None) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % (blocks * 1024))
        for sent in range(blocks):
            if sent == stop_after:
                break  # and never the rest
            sock.sendall(b"x" * 1024)
            time.sleep(0.1)  # 10 KiB/s: the whole body takes longer than the body timeout
        try:
            return sock.recv(200)
        except ConnectionResetError:
            return b""


def test_a_slow_steady_upload_longer_than_the_body_timeout_completes(port: int) -> None:
    blocks = int(3 * BODY_TIMEOUT / 0.1)
    reply = _upload(port, blocks=blocks)
    assert reply.startswith(b"HTTP/1.1 200") and str(blocks * 1024).encode() in reply


def test_an_upload_that_stalls_is_cut(port: int) -> None:
    assert _upload(port, blocks=30, stop_after=3) == b""
