"""``GET /metrics`` on the main port behind the admin key.

The app's ``Metrics`` lives on ``app.state.metrics``. The same registry is served openly on ``--metrics-port`` by
``embedserve.metrics_port``; requests are counted and access-logged by ``embedserve.api.access_log``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from embedserve.api.deps import require_admin
from embedserve.metrics import Metrics, render

router = APIRouter(tags=["operations"])


@router.get("/metrics", include_in_schema=False)
async def metrics_endpoint(request: Request, _: Annotated[None, Depends(require_admin)]) -> Response:
    metrics: Metrics = request.app.state.metrics
    body, content_type = render(metrics)
    return Response(body, media_type=content_type)
