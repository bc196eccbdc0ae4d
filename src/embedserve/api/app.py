"""``create_app(settings, *, engine=None, gateway=None)``: the FastAPI app and its lifespan.

The app holds no durable state: keys, credits and usage live in the gateway's store, so any number of replicas can
run behind a load balancer. An engine or gateway passed in is started here if it is not running yet.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI

from embedserve import __version__
from embedserve.api.access_log import request_observer
from embedserve.api.auth_gate import AuthGateMiddleware
from embedserve.api.bodies import BodyDecoder, InputLimits
from embedserve.api.errors import install_error_handlers
from embedserve.api.middleware import RequestContextMiddleware
from embedserve.api.routes import account, admin, batches, docs, embeddings, files, health, models, playground, tokenize
from embedserve.api.routes import metrics as metrics_routes
from embedserve.metrics import Metrics, batch_observer, set_model_info, track_queue
from embedserve.service import MAX_CHARS_PER_TOKEN, EmbeddingService
from embedserve.settings import Settings

if TYPE_CHECKING:
    from embedserve.accounting.protocol import Gateway
    from embedserve.batch.setup import Batches
    from embedserve.engine.protocol import EmbeddingEngine

logger = logging.getLogger(__name__)


def _default_gateway(settings: Settings) -> Gateway:
    from embedserve.accounting import build_gateway

    return build_gateway(settings)


def _input_limits(engine: EmbeddingEngine, settings: Settings) -> InputLimits | None:
    """What a body-decoding worker needs to judge an input as the service does."""
    if settings.body_workers == 0:
        return None
    return InputLimits(
        max_inputs=settings.max_inputs,
        max_chars=engine.info.max_tokens * MAX_CHARS_PER_TOKEN,
        auto_truncate=engine.settings.auto_truncate,
    )


MULTIPART_OVERHEAD = 1 << 20


def _batches(
    settings: Settings, service: EmbeddingService, decoder: Callable[[], BodyDecoder], metrics: Metrics
) -> Batches:
    from embedserve.api.batch_codec import EmbeddingsCodec
    from embedserve.batch.setup import build_batches

    return build_batches(settings, service=service, codec=EmbeddingsCodec(decoder), metrics=metrics)


def create_app(
    settings: Settings,
    *,
    engine: EmbeddingEngine | None = None,
    gateway: Gateway | None = None,
    metrics: Metrics | None = None,
) -> FastAPI:
    metrics = metrics or Metrics.create()  # ops wiring: one registry per app (pass the engine's, if it has one)
    if engine is None:
        from embedserve.engine.engine import Engine

        engine = Engine(settings.engine, on_batch=batch_observer(metrics))
    if gateway is None:
        gateway = _default_gateway(settings)
    service = EmbeddingService(engine=engine, gateway=gateway, max_inputs=settings.max_inputs, metrics=metrics)
    bulk = _batches(settings, service, lambda: app.state.body_decoder, metrics)  # big lines decode as big bodies do

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await engine.start()
        await gateway.start()
        await bulk.start()
        info = engine.info  # ops wiring: the model info metric
        set_model_info(
            metrics, model=info.name, backend=info.backend, dtype=info.dtype, device=info.device, dim=info.dim
        )
        app.state.body_decoder = BodyDecoder(
            workers=settings.body_workers, spec=_input_limits(engine, settings), metrics=metrics
        )
        try:
            yield
        finally:
            app.state.shutting_down = True
            await bulk.stop()  # before the engine: a chunk cut short is not recorded, and resumes elsewhere
            app.state.body_decoder.close()  # after the batch worker, which decodes big lines with it
            await engine.stop(timeout=settings.shutdown_timeout)
            await gateway.stop()

    app = FastAPI(
        title="embedserve",
        version=__version__,
        summary="OpenAI-compatible embeddings API for BAAI/bge-large-en-v1.5",
        lifespan=lifespan,
        docs_url=None,  # served by routes/docs.py from vendored assets: the CDN defaults are blank offline
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.gateway = gateway
    app.state.service = service
    app.state.body_decoder = BodyDecoder(workers=settings.body_workers, spec=None)
    app.state.batches = bulk
    app.state.started_at = int(time.time())
    app.state.shutting_down = False
    app.state.metrics = metrics  # ops wiring
    track_queue(metrics, depth=lambda: engine.queue_depth, tokens=lambda: engine.queued_tokens)  # ops wiring
    install_error_handlers(app)
    for module in (
        embeddings,
        tokenize,
        account,
        models,
        health,
        admin,
        metrics_routes,
        playground,
        docs,
        files,
        batches,
    ):
        app.include_router(module.router)
    app.add_middleware(AuthGateMiddleware)  # inside the request context: its 401s carry the request id
    app.add_middleware(
        RequestContextMiddleware,
        max_body_bytes=settings.max_body_bytes,
        path_limits={"/v1/files": settings.batch_max_file_bytes + MULTIPART_OVERHEAD},
        on_complete=request_observer(metrics),  # ops wiring
    )
    return app
