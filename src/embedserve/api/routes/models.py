"""``GET /v1/models`` and ``GET /v1/models/{id}``: the one model this server serves."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from embedserve import errors
from embedserve.accounting.values import Principal
from embedserve.api.deps import get_engine, get_principal
from embedserve.api.protocol import ModelCard, ModelList

router = APIRouter(tags=["models"])


def _card(request: Request) -> ModelCard:
    info = get_engine(request).info
    created: int = request.app.state.started_at
    return ModelCard(
        id=info.name,
        created=created,
        dimensions=info.dim,
        max_input_tokens=info.max_tokens,
        random_weights=info.random_weights,
    )


@router.get("/v1/models", response_model=ModelList)
@router.get("/models", response_model=ModelList, include_in_schema=False)
async def list_models(request: Request, _: Annotated[Principal, Depends(get_principal)]) -> ModelList:
    return ModelList(data=[_card(request)])


@router.get("/v1/models/{model_id:path}", response_model=ModelCard)
@router.get("/models/{model_id:path}", response_model=ModelCard, include_in_schema=False)
async def get_model(model_id: str, request: Request, _: Annotated[Principal, Depends(get_principal)]) -> ModelCard:
    card = _card(request)
    if model_id not in (card.id, get_engine(request).info.source):
        raise errors.ModelNotFoundError(f"The model '{model_id}' does not exist on this server.", param="model")
    return card
