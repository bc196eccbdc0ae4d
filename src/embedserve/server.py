"""Running the server process: load the model first, then hand the app to uvicorn, and exit 0 on SIGTERM.

Graceful shutdown: uvicorn stops accepting and waits (up to ``shutdown_timeout``) for requests in flight, which
includes their queued engine work; the lifespan then stops the engine and the gateway (flushing the ledger).
"""

from __future__ import annotations

import logging
import resource
import signal
import sys

import uvicorn

from embedserve.errors import EmbedServeError
from embedserve.http_protocol import guarded_protocol
from embedserve.logs import configure_logging
from embedserve.settings import Settings

logger = logging.getLogger(__name__)


def default_max_connections() -> int:
    """Leave 10% of the file-descriptor limit (at least 64) for the database pool, workers and logs."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 10_000
    return max(16, soft - max(64, soft // 10))


def _configure_logging(settings: Settings) -> None:
    configure_logging(level=settings.log_level, fmt=settings.log_format)


def _banner(settings: Settings, *, host: str, port: int, info: object) -> str:
    base = f"http://{host}:{port}"
    return (
        f"embedserve ready: model {getattr(info, 'name', '?')} ({getattr(info, 'dim', '?')}-dim, "
        f"max {getattr(info, 'max_tokens', '?')} tokens), backend {getattr(info, 'backend', '?')} "
        f"{getattr(info, 'dtype', '?')} on {getattr(info, 'device', '?')}\n"
        f"  API         {base}/v1/embeddings\n"
        f"  models      {base}/v1/models\n"
        f"  playground  {base}/\n"
        f"  docs        {base}/docs\n"
        f"  metrics     {base}/metrics ({'admin key' if settings.auth else 'open: --no-auth'})"
        f"{_open_metrics(settings)}\n"
        f"  health      {base}/health  {base}/ready\n"
        f"  limits      {settings.max_inputs} inputs/request, {getattr(info, 'max_batch_tokens', '?')} batch tokens, "
        f"{settings.engine.max_queued_tokens} queued tokens, truncation "
        f"{'automatic' if settings.engine.auto_truncate else 'on request only'}"
        f"{_random_weights_warning(info)}"
    )


def _random_weights_warning(info: object) -> str:
    if not getattr(info, "random_weights", False):
        return ""
    return (
        "\n  WARNING     RANDOM WEIGHTS (--load-format dummy): every vector is meaningless, whatever the model name "
        "says; do not index anything with it. Serve real weights with --model DIR (a directory holding "
        "model.safetensors) or a Hugging Face id."
    )


def _open_metrics(settings: Settings) -> str:
    if settings.metrics_port is None:
        return ""
    return f", open on http://{settings.host}:{settings.metrics_port}/metrics"


def uvicorn_config(settings: Settings, app: object) -> uvicorn.Config:
    """How uvicorn serves the app, in one process and in each API process of ``--api-processes`` alike: our
    guarded HTTP protocol (header and body timeouts, a connection cap), the graceful-shutdown timeout, our logging.
    Each API process reads the same file-descriptor limit, inherited from its parent."""
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=settings.host,
        port=settings.port,
        http=guarded_protocol(
            header_timeout=settings.header_timeout_seconds,
            body_timeout=settings.body_timeout_seconds,
            max_connections=settings.max_connections or default_max_connections(),
        ),
        log_level=settings.log_level,
        timeout_graceful_shutdown=int(settings.shutdown_timeout) or None,
        lifespan="on",
        log_config=None,  # keep our handler (text or JSON) for uvicorn's records
        access_log=False,  # the middleware writes one access line per request instead
    )


async def run_server(settings: Settings) -> int:
    from embedserve.api.app import create_app
    from embedserve.engine.engine import Engine
    from embedserve.metrics import Metrics, batch_observer
    from embedserve.metrics_port import serve_metrics_port

    _configure_logging(settings)
    metrics = Metrics.create()
    engine = Engine(settings.engine, on_batch=batch_observer(metrics))
    try:
        await engine.start()
    except EmbedServeError as exc:
        print(f"embedserve: could not start the engine: {exc.message}", file=sys.stderr)
        return 2
    app = create_app(settings, engine=engine, metrics=metrics)
    server = uvicorn.Server(uvicorn_config(settings, app))
    # uvicorn re-raises the caught SIGTERM after a graceful shutdown; with a no-op handler installed first, the
    # re-raise lands here and the process exits 0 after finishing its work, as orchestrators expect.
    signal.signal(signal.SIGTERM, lambda *_: None)
    print(
        _banner(settings, host=settings.host, port=settings.port, info=engine.info),
        file=sys.stderr,
        flush=True,
    )
    metrics_server = None
    if settings.metrics_port is not None:
        metrics_server = serve_metrics_port(metrics, host=settings.host, port=settings.metrics_port)
    try:
        await server.serve()
    finally:
        if metrics_server is not None:
            metrics_server.close()
    return 0
