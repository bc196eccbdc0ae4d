"""Big bodies in worker processes: a body whose client has hung up is dropped before its decode begins, and the worker
stays free for the next body."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from starlette.requests import Request

from embedserve import errors
from embedserve.api.bodies import BodyDecoder, InputLimits

LIMITS = InputLimits(max_inputs=2048, max_chars=51_200, auto_truncate=False)
SLOW_BODY = b'{"input":[' + b",".join([b"1"] * 2_000_000) + b"]}"  # about a second of worker CPU, then a 400
TEXTS = ["word " * 100] * 200
QUICK_BODY = json.dumps({"input": TEXTS}).encode()  # 100 KB: over 64 KiB, so a worker decodes it


def _request(body: bytes, *, hang_up: bool) -> Request:
    """A request whose whole body has arrived; the client then hangs up, or waits."""
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        if not hang_up:
            await asyncio.Event().wait()
        return {"type": "http.disconnect"}

    headers = [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]
    return Request({"type": "http", "method": "POST", "path": "/v1/embeddings", "headers": headers}, receive)


async def test_a_hung_up_clients_body_is_dropped_before_its_decode_begins(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="embedserve.api.bodies")
    decoder = BodyDecoder(workers=1, spec=LIMITS)
    try:
        # The worker is spawned for this body (about a second); the hang-up is seen at once, before it is up.
        with pytest.raises(errors.ClientDisconnectedError):
            await decoder.decode(_request(SLOW_BODY, hang_up=True))
        assert "dropped before its decode began" in caplog.text
        assert "killed" not in caplog.text  # it never ran, so there was nothing to kill
        body, texts = await decoder.decode(_request(QUICK_BODY, hang_up=False))
        assert texts == TEXTS and body.encoding_format == "float"
        assert "killed" not in caplog.text and "died" not in caplog.text  # the same worker, kept
    finally:
        decoder.close()
