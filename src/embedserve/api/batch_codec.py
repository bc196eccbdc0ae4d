"""The ``/v1/embeddings`` wire format for batch lines: the route's own body schema, error text and rendering."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from embedserve import errors
from embedserve.api.bodies import BodyDecoder, parse_request
from embedserve.api.errors import describe_validation
from embedserve.api.protocol import EmbeddingRequest, error_body
from embedserve.api.routes.embeddings import embed_request, response_body
from embedserve.service import EmbedRequest, EmbedResult


class EmbeddingsCodec:
    """A ``LineCodec``: a line's body is read and answered exactly as a ``POST /v1/embeddings`` body.

    ``decoder``: the server's body decoder, once it has one; a big body (over 64 KiB) is then validated in one of its
    worker processes, as the route's would be (pydantic holds the GIL: 1.6 s for 3M token ids, stalling the loop).
    """

    def __init__(self, decoder: Callable[[], BodyDecoder | None] | None = None) -> None:
        self._decoder = decoder

    def parse(self, body: Mapping[str, Any], *, request_id: str) -> tuple[EmbedRequest, str]:
        try:
            parsed = EmbeddingRequest.model_validate(body)
        except ValidationError as exc:
            message, param = describe_validation(RequestValidationError(exc.errors()))
            raise errors.ValidationFailedError(message, param=param) from None
        return embed_request(parsed, request_id=request_id), parsed.encoding_format

    async def parse_json(self, body: bytes, *, request_id: str) -> tuple[EmbedRequest, str]:
        decoder = self._decoder() if self._decoder is not None else None
        try:
            if decoder is not None:
                with contextlib.suppress(errors.ServiceUnavailableError):  # its worker died: decode here instead
                    parsed, decoded = await decoder.decode_bytes(body)
                    return embed_request(parsed, request_id=request_id, input=decoded), parsed.encoding_format
            parsed = await asyncio.to_thread(parse_request, body)
        except RequestValidationError as exc:
            message, param = describe_validation(exc)
            raise errors.ValidationFailedError(message, param=param) from None
        return embed_request(parsed, request_id=request_id), parsed.encoding_format

    def render(self, result: EmbedResult, *, encoding_format: str) -> dict[str, Any]:
        return response_body(result, encoding_format=encoding_format)

    def error_body(self, exc: errors.EmbedServeError) -> dict[str, Any]:
        return error_body(message=exc.message, type=exc.type, param=exc.param, code=exc.code)
