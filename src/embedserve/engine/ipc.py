"""The wire between API processes and the engine process (``--api-processes``): ZeroMQ multipart messages whose
payloads are raw numpy buffers, never JSON or pickle of lists.

A request is ``[header, ids, lengths]``: every input's token ids end to end as int32, then each input's length as
int32. A reply is ``[header, payload]``: the ``(n, dim)`` float32 rows, or an error as a small JSON object (class
name, message, param, headers, retry delay), or one readiness byte. Each reply header also carries the engine's
queue depth and queued tokens at that moment (what ``/metrics`` shows in an API process) and, for rows, the request's
queue and forward-pass seconds (``EmbedTiming``: the access line's ``queue_ms`` and ``inference_ms``).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import numpy.typing as npt

from embedserve import errors
from embedserve.engine.encoding import Encoding
from embedserve.engine.scheduler import EmbedTiming, Priority

_REQUEST = struct.Struct("<BBQ")  # kind, priority, sequence number
_REPLY = struct.Struct("<BQQQdd")  # status, sequence number, queue depth, queued tokens, queue s, inference s
Buffer = bytes | memoryview | npt.NDArray[np.generic]


class Kind(IntEnum):
    EMBED = 1
    CANCEL = 2
    READY = 3


class Status(IntEnum):
    OK = 0
    ERROR = 1
    READY = 2


@dataclass(frozen=True, slots=True)
class Request:
    kind: Kind
    seq: int
    priority: Priority = Priority.ONLINE
    encodings: tuple[Encoding, ...] = ()


@dataclass(frozen=True, slots=True)
class ReplyHeader:
    status: Status
    seq: int
    queue_depth: int
    queued_tokens: int
    queue_seconds: float = 0.0
    inference_seconds: float = 0.0


def embed_request(seq: int, encodings: Sequence[Encoding], *, priority: Priority) -> list[Buffer]:
    lengths = np.fromiter((e.length for e in encodings), dtype=np.int32, count=len(encodings))
    ids = np.fromiter((i for e in encodings for i in e.ids), dtype=np.int32, count=int(lengths.sum()))
    return [_REQUEST.pack(Kind.EMBED, priority, seq), ids, lengths]


def control_request(kind: Kind, seq: int) -> list[Buffer]:
    return [_REQUEST.pack(kind, Priority.ONLINE, seq)]


def parse_request(frames: Sequence[Buffer]) -> Request:
    kind, priority, seq = _REQUEST.unpack(bytes(frames[0]))
    if kind != Kind.EMBED:
        return Request(Kind(kind), seq)
    ids = np.frombuffer(frames[1], dtype=np.int32).tolist()
    lengths = np.frombuffer(frames[2], dtype=np.int32).tolist()
    encodings, start = [], 0
    for length in lengths:
        encodings.append(Encoding(ids=tuple(ids[start : start + length])))
        start += length
    return Request(Kind.EMBED, seq, Priority(priority), tuple(encodings))


def reply(
    status: Status, seq: int, payload: Buffer, *, depth: int, tokens: int, timing: EmbedTiming | None = None
) -> list[Buffer]:
    queue_s, inference_s = (timing.queue_seconds, timing.inference_seconds) if timing is not None else (0.0, 0.0)
    return [_REPLY.pack(status, seq, depth, tokens, queue_s, inference_s), payload]


def vectors_reply(
    seq: int, vectors: npt.NDArray[np.float32], *, depth: int, tokens: int, timing: EmbedTiming
) -> list[Buffer]:
    rows = np.ascontiguousarray(vectors, dtype=np.float32)
    return reply(Status.OK, seq, rows, depth=depth, tokens=tokens, timing=timing)


def error_reply(seq: int, exc: errors.EmbedServeError, *, depth: int, tokens: int) -> list[Buffer]:
    body = {
        "class": type(exc).__name__,
        "message": exc.message,
        "param": exc.param,
        "headers": exc.headers,
        "retry_after_s": exc.retry_after_s,
    }
    return reply(Status.ERROR, seq, json.dumps(body).encode(), depth=depth, tokens=tokens)


def parse_reply_header(frame: Buffer) -> ReplyHeader:
    status, seq, depth, tokens, queue_s, inference_s = _REPLY.unpack(bytes(frame))
    return ReplyHeader(Status(status), seq, depth, tokens, queue_s, inference_s)


def parse_vectors(frame: Buffer, *, dim: int) -> npt.NDArray[np.float32]:
    """The rows as a read-only view of the received frame (no copy)."""
    return np.frombuffer(frame, dtype=np.float32).reshape(-1, dim)


def parse_error(frame: Buffer) -> errors.EmbedServeError:
    """The engine's error as the same class the single-process server raises (status, code, retry delay kept)."""
    body = json.loads(bytes(frame))
    cls = getattr(errors, str(body.get("class")), None)
    if not (isinstance(cls, type) and issubclass(cls, errors.EmbedServeError)):
        cls = errors.EngineError
    return cls(
        str(body["message"]),
        param=body.get("param"),
        headers=body.get("headers") or {},
        retry_after_s=body.get("retry_after_s"),
    )
