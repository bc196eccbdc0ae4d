"""The wire between API processes and the engine process: encodings, rows and errors cross unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from embedserve import errors
from embedserve.engine import ipc
from embedserve.engine.encoding import Encoding
from embedserve.engine.scheduler import EmbedTiming, Priority


def _wire(frames: list[ipc.Buffer]) -> list[bytes]:
    """What ZeroMQ delivers: each frame's bytes."""
    return [f.tobytes() if isinstance(f, np.ndarray) else bytes(f) for f in frames]


@pytest.mark.parametrize("priority", [Priority.ONLINE, Priority.BULK])
def test_encodings_and_priority_cross_unchanged_as_int32_buffers(priority: Priority) -> None:
    encodings = [Encoding(ids=(101, 7592, 102)), Encoding(ids=(101, 102)), Encoding(ids=(101, 30521, 5, 102))]
    frames = ipc.embed_request(42, encodings, priority=priority)
    assert all(isinstance(f, np.ndarray) and f.dtype == np.int32 for f in frames[1:])
    request = ipc.parse_request(_wire(frames))
    assert request.kind is ipc.Kind.EMBED and request.seq == 42 and request.priority is priority
    assert request.encodings == tuple(encodings)


def test_cancel_and_ready_carry_only_their_sequence_number() -> None:
    request = ipc.parse_request(_wire(ipc.control_request(ipc.Kind.CANCEL, 7)))
    assert (request.kind, request.seq, request.encodings) == (ipc.Kind.CANCEL, 7, ())


def test_rows_come_back_bit_for_bit_with_the_queue_state_and_the_request_s_timings() -> None:
    rows = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    timing = EmbedTiming(queue_seconds=0.25, inference_seconds=0.0625)
    header, payload = _wire(ipc.vectors_reply(9, rows, depth=4, tokens=1234, timing=timing))
    assert ipc.parse_reply_header(header) == ipc.ReplyHeader(ipc.Status.OK, 9, 4, 1234, 0.25, 0.0625)
    back = ipc.parse_vectors(payload, dim=8)
    assert back.dtype == np.float32 and back.shape == (3, 8)
    assert back.tobytes() == rows.tobytes()


def test_an_engine_error_keeps_its_class_message_param_and_retry_delay() -> None:
    sent = errors.ServerOverloadedError("at capacity; retry in 3 s.", retry_after_s=3, headers={"x-a": "b"})
    header, payload = _wire(ipc.error_reply(1, sent, depth=0, tokens=0))
    assert ipc.parse_reply_header(header).status is ipc.Status.ERROR
    got = ipc.parse_error(payload)
    assert type(got) is errors.ServerOverloadedError and got.status == 503
    assert got.message == sent.message and got.retry_after_s == 3 and got.param is None
    assert got.headers == {"x-a": "b"}


def test_an_unknown_error_class_becomes_an_engine_error() -> None:
    got = ipc.parse_error(b'{"class": "KeyError", "message": "boom", "param": null, "headers": {}}')
    assert type(got) is errors.EngineError and got.status == 500
