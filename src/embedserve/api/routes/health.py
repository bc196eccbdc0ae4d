"""``/health`` (the process is up) and ``/ready`` (a tiny forward pass succeeds and the accounting database answers);
both open, no key needed. A load balancer should route on ``/ready``: it is 503 while the store is unreachable."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from embedserve.api.deps import get_engine, get_gateway

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready", response_model=None)
async def ready(request: Request) -> JSONResponse | dict[str, str | bool]:
    engine = get_engine(request)
    if request.app.state.shutting_down or not await engine.ready():
        return JSONResponse({"status": "unavailable"}, status_code=503)
    if not await get_gateway(request).ready():
        return JSONResponse({"status": "unavailable", "reason": "store_unavailable"}, status_code=503)
    info = engine.info
    return {
        "status": "ready",
        "model": info.name,
        "backend": info.backend,
        "dtype": info.dtype,
        "device": info.device,
        "random_weights": info.random_weights,  # true under --load-format dummy: the vectors carry no meaning
    }
