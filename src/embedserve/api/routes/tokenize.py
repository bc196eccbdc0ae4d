"""``POST /tokenize`` and ``POST /decode`` in Hugging Face TEI's shape: how the model's tokenizer reads a text, and
its token ids back to text. Behind the API key, rate limited like any request, no credits charged."""

from __future__ import annotations

import dataclasses
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from embedserve import errors
from embedserve.accounting.values import Principal
from embedserve.api.deps import get_principal, get_service
from embedserve.api.headers import rate_limit_headers
from embedserve.api.protocol import DecodeRequest, DecodeResponse, ErrorResponse, TokenizeRequest, TokenizeResponse

router = APIRouter(tags=["tokenizer"])

_ERRORS: dict[int | str, dict[str, object]] = {code: {"model": ErrorResponse} for code in (400, 401, 404, 429)}


@router.post("/tokenize", response_model=TokenizeResponse, responses=_ERRORS)
async def tokenize(
    body: TokenizeRequest, request: Request, principal: Annotated[Principal, Depends(get_principal)]
) -> JSONResponse:
    """Each input's tokens with character offsets, and their count (what an embeddings request would be charged)."""
    if (body.inputs is None) == (body.input is None):
        raise errors.InvalidInputError("Send the texts as 'inputs' (or 'input'), exactly one of them.", param="inputs")
    texts = body.inputs if body.inputs is not None else body.input
    assert texts is not None
    service = get_service(request)
    service.check_model(body.model)
    result = await service.tokenize(
        texts, principal, add_special_tokens=body.add_special_tokens, input_type=body.input_type
    )
    content = {
        "model": result.model,
        "offsets": "characters",
        "tokens": [[dataclasses.asdict(token) for token in row] for row in result.tokens],
        "count": [len(row) for row in result.tokens],
    }
    return JSONResponse(content, headers=rate_limit_headers(result.rate_limit))


@router.post("/decode", response_model=DecodeResponse, responses=_ERRORS)
async def decode(
    body: DecodeRequest, request: Request, principal: Annotated[Principal, Depends(get_principal)]
) -> JSONResponse:
    """The model's token ids back to text, one text per id list."""
    service = get_service(request)
    service.check_model(body.model)
    result = await service.decode(body.ids, principal, skip_special_tokens=body.skip_special_tokens)
    content = {"model": result.model, "texts": result.texts}
    return JSONResponse(content, headers=rate_limit_headers(result.rate_limit))
