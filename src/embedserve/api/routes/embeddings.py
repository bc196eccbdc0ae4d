"""``POST /v1/embeddings`` (alias ``/embeddings``): the OpenAI embeddings endpoint."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from embedserve import errors
from embedserve.accounting.values import Principal
from embedserve.api.access_log import current_record
from embedserve.api.bodies import BodyDecoder, done_first
from embedserve.api.deps import get_engine, get_principal, get_service, request_id
from embedserve.api.encoding import dumps, embedding_items
from embedserve.api.headers import rate_limit_headers
from embedserve.api.protocol import EmbeddingRequest, EmbeddingResponse, ErrorResponse
from embedserve.metrics import observe_usage
from embedserve.service import EmbedRequest, EmbedResult, RawInput

router = APIRouter(tags=["embeddings"])
T = TypeVar("T")
_SETTLE_GRACE_S = 5.0  # how long a cancelled request waits for its refund to be written

_ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 402, 404, 413, 429, 500, 503)
}


async def _cancel_on_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Run ``work`` but cancel it if the client disconnects, so its queued inputs are skipped and refunded.

    Cancelled from outside (the shutdown timeout ran out) the work is cancelled too, and given a moment to refund,
    so a request that gets no result is never charged."""
    task = asyncio.ensure_future(work)
    try:
        done = await done_first(task, request)
    except BaseException:
        task.cancel()
        await asyncio.wait({task}, timeout=_SETTLE_GRACE_S)
        raise
    if not done:
        task.cancel()
        await asyncio.wait({task}, timeout=_SETTLE_GRACE_S)
        raise errors.ClientDisconnectedError("The client closed the connection before the response was ready.")
    return await task


def response_body(result: EmbedResult, *, encoding_format: str) -> dict[str, Any]:
    """The response body of ``/v1/embeddings`` (batch output lines carry the very same)."""
    tokens = result.prompt_tokens
    return {
        "object": "list",
        "data": embedding_items(result.vectors, encoding_format=encoding_format),  # type: ignore[arg-type]
        "model": result.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        "id": f"embd-{uuid.uuid4().hex}",
        "created": int(time.time()),
        "meta": {"usage": {"credits_used": result.credits_used}},
    }


def embed_request(body: EmbeddingRequest, *, request_id: str, input: RawInput | None = None) -> EmbedRequest:
    """The service's request for a parsed body (``input``: the body's input already decoded compactly, if it was)."""
    return EmbedRequest(
        input=body.input if input is None else input,
        request_id=request_id,
        model=body.model,
        input_type=body.input_type,
        truncate=body.truncate,
        dimensions=body.dimensions,
    )


# The body is decoded by the route (off the event loop, see api/bodies.py), so its schema is declared here.
_REQUEST_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": EmbeddingRequest.model_json_schema()}},
    }
}


@router.post("/v1/embeddings", response_model=EmbeddingResponse, responses=_ERRORS, openapi_extra=_REQUEST_BODY)
@router.post("/embeddings", response_model=EmbeddingResponse, include_in_schema=False)
async def create_embeddings(
    request: Request,
    principal: Annotated[Principal, Depends(get_principal)],
) -> Response:
    """Create embeddings for one or many inputs."""
    decoder: BodyDecoder = request.app.state.body_decoder
    body, decoded_input = await decoder.decode(request)
    embed = embed_request(body, request_id=request_id(request), input=decoded_input)
    result = await _cancel_on_disconnect(request, get_service(request).embed(embed, principal))
    inputs, tokens = len(result.token_counts), result.prompt_tokens
    record = current_record()  # ops wiring: the access line's counts and engine timings
    record.inputs, record.tokens = inputs, tokens
    if (timing := result.timing) is not None:
        record.queue_ms, record.inference_ms = timing.queue_seconds * 1000, timing.inference_seconds * 1000
    observe_usage(
        request.app.state.metrics, key_id=principal.key_id, inputs=inputs, tokens=tokens, credits=result.credits_used
    )
    headers = {
        **rate_limit_headers(result.rate_limit),
        "x-embedserve-truncated-inputs": str(result.truncated),
        "x-embedserve-input-tokens": ",".join(map(str, result.token_counts)),
    }
    if get_engine(request).info.random_weights:  # --load-format dummy: say so on every response, not only at start
        headers["x-embedserve-random-weights"] = "true"
    if result.credits_remaining is not None:  # the key's balance after this request (absent: unlimited)
        headers["x-embedserve-credits-remaining"] = str(result.credits_remaining)
    if result.token_ids:  # how each token-id array was read: wordpiece (the model's ids) or tiktoken (cl100k)
        headers["x-embedserve-token-ids"] = ",".join(result.token_ids)
    content = dumps(response_body(result, encoding_format=body.encoding_format))
    return Response(content, media_type="application/json", headers=headers)
