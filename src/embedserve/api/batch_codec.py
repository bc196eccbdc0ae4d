"""The ``/v1/embeddings`` wire format for batch lines: the route's own body schema, error text and rendering."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from embedserve import errors
from embedserve.api.errors import describe_validation
from embedserve.api.protocol import EmbeddingRequest, error_body
from embedserve.api.routes.embeddings import embed_request, response_body
from embedserve.service import EmbedRequest, EmbedResult


class EmbeddingsCodec:
    """A ``LineCodec``: a line's body is read and answered exactly as a ``POST /v1/embeddings`` body."""

    def parse(self, body: Mapping[str, Any], *, request_id: str) -> tuple[EmbedRequest, str]:
        try:
            parsed = EmbeddingRequest.model_validate(body)
        except ValidationError as exc:
            message, param = describe_validation(RequestValidationError(exc.errors()))
            raise errors.ValidationFailedError(message, param=param) from None
        return embed_request(parsed, request_id=request_id), parsed.encoding_format

    def render(self, result: EmbedResult, *, encoding_format: str) -> dict[str, Any]:
        return response_body(result, encoding_format=encoding_format)

    def error_body(self, exc: errors.EmbedServeError) -> dict[str, Any]:
        return error_body(message=exc.message, type=exc.type, param=exc.param, code=exc.code)
