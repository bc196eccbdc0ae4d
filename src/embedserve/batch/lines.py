"""One line of a batch: parsing the input line, running its body through the service, writing the result line.

A line's body is judged and priced by ``EmbeddingService`` exactly as a ``/v1/embeddings`` request is; the wire
details (body schema, response rendering) come from the API layer through a ``LineCodec``, so there is one path.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import orjson

from embedserve.engine.scheduler import Priority
from embedserve.errors import EmbedServeError, EngineError, ServerOverloadedError
from embedserve.service import EmbeddingService, EmbedRequest, EmbedResult, Prepared

logger = logging.getLogger(__name__)
MAX_OVERLOAD_WAIT_S = 30.0
INLINE_BODY_BYTES = 64 * 1024  # a bigger body is validated in a thread (as the online route does past 64 KiB)


class LineCodec(Protocol):
    """The ``/v1/embeddings`` wire format, supplied by the API layer."""

    def parse(self, body: Mapping[str, Any], *, request_id: str) -> tuple[EmbedRequest, str]:
        """The request and its ``encoding_format``, or ``EmbedServeError`` exactly as the route would answer."""
        ...

    async def parse_json(self, body: bytes, *, request_id: str) -> tuple[EmbedRequest, str]:
        """``parse`` for a big body still in JSON, off the event loop (and off its interpreter, where it can)."""
        ...

    def render(self, result: EmbedResult, *, encoding_format: str) -> dict[str, Any]:
        """The response body ``/v1/embeddings`` would return."""
        ...

    def error_body(self, exc: EmbedServeError) -> dict[str, Any]:
        """The error envelope a request failing with ``exc`` would get."""
        ...


@dataclass(frozen=True, slots=True)
class BatchLine:
    number: int  # 1-based line number in the input file
    custom_id: str
    body: Mapping[str, Any]
    size: int = 0  # bytes of the input line
    body_json: bytes | None = None  # a big line's body, kept as JSON (``body`` is then empty) for ``parse_json``

    def json_body(self) -> bytes:
        """The body as JSON, whichever way it is kept (Ray sends lines to its actors this way)."""
        return self.body_json if self.body_json is not None else orjson.dumps(self.body)


@dataclass(frozen=True, slots=True)
class LineProblem:
    number: int
    code: str
    message: str
    param: str | None = None

    def as_error(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "param": self.param, "line": self.number}


def parse_line(raw: bytes, *, number: int, endpoint: str) -> BatchLine | LineProblem:
    """An input line ``{custom_id, method, url, body}``, or what is wrong with it."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return LineProblem(number, "invalid_json_line", f"Line {number} is not valid JSON: {exc.msg}.")
    if not isinstance(obj, dict):
        return LineProblem(number, "invalid_json_line", f"Line {number} is not a JSON object.")
    custom_id = obj.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return LineProblem(
            number, "missing_required_parameter", f"Line {number} has no string 'custom_id'.", "custom_id"
        )
    if obj.get("method") != "POST":
        return LineProblem(number, "invalid_method", f"Line {number}: 'method' must be 'POST'.", "method")
    if obj.get("url") != endpoint:
        return LineProblem(
            number, "invalid_url", f"Line {number}: 'url' is {obj.get('url')!r}, but this batch's endpoint is "
            f"'{endpoint}'; every line must use the batch's endpoint.", "url",
        )  # fmt: skip
    body = obj.get("body")
    if not isinstance(body, dict):
        return LineProblem(number, "missing_required_parameter", f"Line {number} has no object 'body'.", "body")
    if len(raw) > INLINE_BODY_BYTES:  # millions of Python objects: keep it compact until a worker decodes it
        return BatchLine(number=number, custom_id=custom_id, body={}, size=len(raw), body_json=orjson.dumps(body))
    return BatchLine(number=number, custom_id=custom_id, body=body, size=len(raw))


@dataclass(frozen=True, slots=True)
class LineOutcome:
    ok: bool
    custom_id: str
    data: bytes  # the output or error file line, newline included
    inputs: int = 0
    tokens: int = 0
    credits: int = 0
    vectors: npt.NDArray[np.float32] | None = None  # kept only when the runner is asked to (Parquet output)


def _retry_after(exc: EmbedServeError) -> float:
    try:
        seconds = float(exc.headers.get("Retry-After", "1"))
    except ValueError:
        seconds = 1.0
    return min(max(seconds, 0.05), MAX_OVERLOAD_WAIT_S)


def result_line(*, custom_id: str, request_id: str, status_code: int, body: Mapping[str, Any]) -> bytes:
    line = {
        "id": f"batch_req_{uuid.uuid4().hex}",
        "custom_id": custom_id,
        "response": {"status_code": status_code, "request_id": request_id, "body": body},
        "error": None,
    }
    return orjson.dumps(line, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE)


def with_credits(outcome: LineOutcome, credits: int) -> LineOutcome:
    """``outcome`` charged ``credits``, its line saying so (``meta.usage.credits_used``) as well as its counts: for a
    line priced at another rate than the one charged (a Ray actor's), or charged less (a hold running short)."""
    if not outcome.ok or outcome.credits == credits:
        return outcome
    data = outcome.data
    if data:  # rare (see above): decoding the line again costs about what rendering it did
        line = orjson.loads(data)
        line["response"]["body"]["meta"]["usage"]["credits_used"] = credits
        data = orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)
    return dataclasses.replace(outcome, credits=credits, data=data)


@dataclass(frozen=True, slots=True)
class _Ready:
    """A line judged and tokenised, waiting for the engine."""

    line: BatchLine
    request_id: str
    encoding_format: str
    prepared: Prepared
    credits: int


NOT_RUN = {
    "batch_expired": "This request could not be executed before the completion window expired.",
    "batch_cancelled": "This request was not executed because the batch was cancelled.",
    "batch_failed": "This request was not executed because the batch failed (see the batch's errors).",
}


def not_run_line(custom_id: str, *, code: str) -> bytes:
    """The error file line of a request its job ended before running (OpenAI's shape): ``batch_expired`` when the
    completion window closed on it, ``batch_cancelled`` when the job was cancelled (OpenAI's codes), ``batch_failed``
    when the job failed (ours)."""
    line = {
        "id": f"batch_req_{uuid.uuid4().hex}",
        "custom_id": custom_id,
        "response": None,
        "error": {"code": code, "message": NOT_RUN[code]},
    }
    return orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)


class LineRunner:
    """Runs lines through the service at a priority, with credits already held by the caller."""

    def __init__(
        self, *, service: EmbeddingService, codec: LineCodec, price: Callable[[int], int], priority: Priority,
        keep_vectors: bool = False,
    ) -> None:  # fmt: skip
        self.service = service
        self.codec = codec
        self.price = price
        self.priority = priority
        self.keep_vectors = keep_vectors

    async def judge(self, line: BatchLine) -> tuple[int, int, int] | None:
        """(inputs, tokens, credits) the line will cost, or None when it will fail (and cost nothing)."""
        try:
            request, _ = await self._parse(line, request_id="validation")
            prepared = await self.service.prepare(request)
        except EmbedServeError:
            return None
        tokens = sum(prepared.token_counts)
        return len(prepared.encodings), tokens, self.price(tokens)

    async def run(self, line: BatchLine, *, price: Callable[[int], int] | None = None) -> LineOutcome:
        """``price``: the price the line's credits were held at (a job's), if not this runner's own."""
        return (await self.run_many([line], price=price))[0]

    async def _prepare(self, line: BatchLine, price: Callable[[int], int]) -> _Ready | LineOutcome:
        request_id = f"req_{uuid.uuid4().hex}"
        try:
            request, encoding_format = await self._parse(line, request_id=request_id)
            prepared = await self.service.prepare(request)
        except EmbedServeError as exc:
            return self._failed(line, request_id, exc)
        except Exception:
            return self._unexpected(line, request_id)
        return _Ready(line, request_id, encoding_format, prepared, price(sum(prepared.token_counts)))

    async def _embed(self, ready: _Ready | LineOutcome) -> LineOutcome:
        if isinstance(ready, LineOutcome):
            return ready
        line, request_id, prepared = ready.line, ready.request_id, ready.prepared
        try:
            result = await self._embed_waiting(prepared, ready.credits)
        except EmbedServeError as exc:
            return self._failed(line, request_id, exc)
        except Exception:
            return self._unexpected(line, request_id)
        counts = (len(prepared.encodings), sum(prepared.token_counts), ready.credits)
        if self.keep_vectors:
            return LineOutcome(True, line.custom_id, b"", *counts, vectors=result.vectors)
        body = self.codec.render(result, encoding_format=ready.encoding_format)
        data = result_line(custom_id=line.custom_id, request_id=request_id, status_code=200, body=body)
        return LineOutcome(True, line.custom_id, data, *counts)

    def _unexpected(self, line: BatchLine, request_id: str) -> LineOutcome:
        logger.exception("batch line %d failed unexpectedly", line.number)
        return self._failed(line, request_id, EngineError("The server had an error processing this line."))

    async def _parse(self, line: BatchLine, *, request_id: str) -> tuple[EmbedRequest, str]:
        if line.body_json is not None:
            return await self.codec.parse_json(line.body_json, request_id=request_id)
        return self.codec.parse(line.body, request_id=request_id)

    async def _embed_waiting(self, prepared: Prepared, credits: int) -> EmbedResult:
        """Bulk work waits out an engine at capacity (its Retry-After) and tries again: a full queue is the engine
        being busy, never the line's result."""
        while True:
            try:
                return await self.service.embed_prepaid(prepared, credits=credits, priority=self.priority)
            except ServerOverloadedError as exc:
                wait = _retry_after(exc)
            await asyncio.sleep(wait * random.uniform(1.0, 1.5))  # spread a chunk's lines' retries apart

    def _failed(self, line: BatchLine, request_id: str, exc: EmbedServeError) -> LineOutcome:
        body = self.codec.error_body(exc)
        data = result_line(custom_id=line.custom_id, request_id=request_id, status_code=exc.status, body=body)
        return LineOutcome(False, line.custom_id, data)

    async def run_many(
        self, lines: Sequence[BatchLine], *, price: Callable[[int], int] | None = None
    ) -> list[LineOutcome]:
        """All lines are tokenised first, then handed to the engine together: submitted one by one as each finished
        tokenising, the first lines of every chunk went to the model as batches of one or two (small, slow passes).
        ``price``: the price the lines' credits were held at (a job's), if not this runner's own."""
        ready = await asyncio.gather(*(self._prepare(line, price or self.price) for line in lines))
        return list(await asyncio.gather(*(self._embed(r) for r in ready)))
