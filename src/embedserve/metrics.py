"""Every Prometheus metric embedserve exports: names, labels and buckets are defined here and only here.

``Metrics.create()`` builds them on a fresh ``CollectorRegistry`` per app, so tests and several apps in one
process never collide. Call sites use the one-line ``observe_*`` helpers; ``render`` gives the exposition.

Under ``--api-processes`` (``Metrics.create(shared=True)``) the engine process and every API process write their
counters and histograms to files in one directory, prometheus_client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``,
set by the parent for its children), and a scrape of any API process renders them summed over all processes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal, Protocol, get_args

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    generate_latest,
    values,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

SHARED_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Reported by the process that takes the scrape, never summed: the queue as its engine last reported it (every
# process writes these gauges' zeros to the shared files too, so they are left out of the sum).
_OWN_FAMILIES = frozenset({"embedserve_queue_depth", "embedserve_queued_tokens"})

ANONYMOUS_KEY = "anonymous"  # the key_id label when auth is off
AbandonHow = Literal["skipped", "killed"]  # the how label of embedserve_body_decodes_abandoned
ABANDONED_HOW: tuple[AbandonHow, ...] = get_args(AbandonHow)

# Latencies: a request spans ~2 ms (one short text, small model) to tens of seconds (a full batch).
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
QUEUE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
TOKENIZE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
INFERENCE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
BATCH_TOKEN_BUCKETS = (16, 64, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072)


@dataclass(frozen=True, slots=True)
class Metrics:
    """The metric objects of one app, all registered on ``registry``."""

    registry: CollectorRegistry
    requests: Counter
    request_duration: Histogram
    queue_wait: Histogram
    tokenization_duration: Histogram
    inference_duration: Histogram
    batch_size: Histogram
    batch_tokens: Histogram
    queue_depth: Gauge
    queued_tokens: Gauge
    tokens: Counter
    credits: Counter
    inputs: Counter
    errors: Counter
    model: Info
    ray_lines: Counter
    body_decodes_abandoned: Counter

    @classmethod
    def create(cls, *, process: bool = True, shared: bool = False) -> Metrics:
        """A fresh registry with every embedserve metric (and by default the standard ``process_*`` ones).

        ``shared``: one of ``--api-processes``' processes. Its counters and histograms go to the shared directory
        only, and its registry renders every process's, summed, with its own ``process_*``, queue gauges and model
        info (the multiprocess mode cannot sum those)."""
        r = CollectorRegistry(auto_describe=True)
        if process:
            ProcessCollector(registry=r)
        # Where the counters and histograms are registered: this registry, or none when shared (the files are read).
        summable: CollectorRegistry | None = r
        if shared:
            r.register(_Shared(shared_dir()))
            summable = None
        return cls(
            registry=r,
            requests=Counter(
                "embedserve_requests",
                "HTTP requests answered, by route template and status code.",
                ["route", "status"],
                registry=summable,
            ),
            request_duration=Histogram(
                "embedserve_request_duration_seconds",
                "Time from request received to response sent.",
                ["route"],
                buckets=REQUEST_BUCKETS,
                registry=summable,
            ),
            queue_wait=Histogram(
                "embedserve_queue_wait_seconds",
                "Per batch: how long its oldest input waited in the engine queue before the batch ran.",
                buckets=QUEUE_BUCKETS,
                registry=summable,
            ),
            tokenization_duration=Histogram(
                "embedserve_tokenization_duration_seconds",
                "Time to tokenise one request's inputs.",
                buckets=TOKENIZE_BUCKETS,
                registry=summable,
            ),
            inference_duration=Histogram(
                "embedserve_inference_duration_seconds",
                "Time of one forward pass (one batch), pooling included.",
                buckets=INFERENCE_BUCKETS,
                registry=summable,
            ),
            batch_size=Histogram(
                "embedserve_batch_size", "Inputs per forward pass.", buckets=BATCH_SIZE_BUCKETS, registry=summable
            ),
            batch_tokens=Histogram(
                "embedserve_batch_tokens",
                "Padded tokens per forward pass.",
                buckets=BATCH_TOKEN_BUCKETS,
                registry=summable,
            ),
            queue_depth=Gauge("embedserve_queue_depth", "Inputs waiting in the engine queue.", registry=r),
            queued_tokens=Gauge("embedserve_queued_tokens", "Tokens waiting in the engine queue.", registry=r),
            tokens=Counter(
                "embedserve_tokens", "Prompt tokens embedded, by API key id.", ["key_id"], registry=summable
            ),
            credits=Counter("embedserve_credits", "Credits charged, by API key id.", ["key_id"], registry=summable),
            inputs=Counter("embedserve_inputs", "Inputs embedded, by API key id.", ["key_id"], registry=summable),
            errors=Counter(
                "embedserve_errors",
                "Errors returned to callers, by OpenAI error type and code.",
                ["type", "code"],
                registry=summable,
            ),
            model=Info("embedserve_model", "The model being served and how it runs.", registry=r),
            ray_lines=Counter(
                "embedserve_batch_lines_on_ray",
                "Batch job lines embedded on Ray actors (serve --ray-address), by Ray node id.",
                ["node"],
                registry=r,
            ),
            body_decodes_abandoned=_zeroed(
                Counter(
                    "embedserve_body_decodes_abandoned",
                    "Big-body decodes given up because their client hung up, by how: skipped (not yet begun) "
                    "or killed (running for over a second, with its worker process).",
                    ["how"],
                    registry=summable,
                ),
                label="how",
                values=ABANDONED_HOW,
            ),
        )


def _zeroed(counter: Counter, *, label: str, values: Iterable[str]) -> Counter:
    """Every series of a rare event's counter, at 0 from the start: a rate or an alert sees its first increment."""
    for value in values:
        counter.labels(**{label: value})
    return counter


def shared_dir() -> str:
    """The directory ``--api-processes``' processes share their metrics through. prometheus_client chooses its
    multiprocess mode when imported, so the variable must be set before the process starts: the parent sets it."""
    path = os.environ.get(SHARED_DIR_ENV)
    if not path or not getattr(values.ValueClass, "_multiprocess", False):
        raise RuntimeError(f"shared metrics need {SHARED_DIR_ENV} set before the process starts")
    return path


class _Shared(Collector):
    """Every process's counters and histograms, summed from the shared directory (``MultiProcessCollector``)."""

    def __init__(self, path: str) -> None:
        self._files = MultiProcessCollector(None, path=path)  # type: ignore[no-untyped-call]

    def collect(self) -> Iterable[Metric]:
        return [m for m in self._files.collect() if m.name not in _OWN_FAMILIES]  # type: ignore[no-untyped-call]

    def describe(self) -> Iterable[Metric]:
        return []  # what the files hold changes as processes come and go: nothing to read at registration


def render(metrics: Metrics) -> tuple[bytes, str]:
    """The Prometheus text exposition of ``metrics`` and its content type."""
    return generate_latest(metrics.registry), CONTENT_TYPE_LATEST


def _key(key_id: str | None) -> str:
    return key_id if key_id else ANONYMOUS_KEY


def observe_request(metrics: Metrics, *, route: str, status: int, seconds: float) -> None:
    """Middleware, per request; ``route`` is the template (``/v1/models/{model_id:path}``), never a path."""
    metrics.requests.labels(route=route, status=str(status)).inc()
    metrics.request_duration.labels(route=route).observe(seconds)


def observe_tokenization(metrics: Metrics, seconds: float) -> None:
    metrics.tokenization_duration.observe(seconds)


def observe_usage(metrics: Metrics, *, key_id: str | None, inputs: int, tokens: int, credits: int) -> None:
    """Service, once per successful embeddings request (after settling)."""
    key = _key(key_id)
    metrics.inputs.labels(key_id=key).inc(inputs)
    metrics.tokens.labels(key_id=key).inc(tokens)
    metrics.credits.labels(key_id=key).inc(credits)


def observe_error(metrics: Metrics, *, type: str, code: str | None) -> None:
    """Error handlers, once per error response (``type``/``code`` as in the OpenAI envelope)."""
    metrics.errors.labels(type=type, code=code or "none").inc()


def observe_queue_wait(metrics: Metrics, seconds: float) -> None:
    metrics.queue_wait.observe(seconds)


def observe_batch(
    metrics: Metrics, *, size: int, tokens: int, seconds: float, queue_seconds: float | None = None
) -> None:
    """Scheduler, once per forward pass: inputs, padded tokens, the pass's duration and its oldest input's wait."""
    metrics.batch_size.observe(size)
    metrics.batch_tokens.observe(tokens)
    metrics.inference_duration.observe(seconds)
    if queue_seconds is not None:
        metrics.queue_wait.observe(queue_seconds)


class BatchReport(Protocol):
    """What the engine's ``on_batch`` hook reports (``engine.scheduler.BatchStats``), structurally."""

    @property
    def size(self) -> int: ...
    @property
    def padded_tokens(self) -> int: ...
    @property
    def queue_seconds(self) -> float: ...
    @property
    def inference_seconds(self) -> float: ...


def batch_observer(metrics: Metrics) -> Callable[[BatchReport], None]:
    """The engine's ``on_batch`` hook: ``Engine(settings, on_batch=batch_observer(metrics))``."""

    def on_batch(stats: BatchReport) -> None:
        observe_batch(
            metrics,
            size=stats.size,
            tokens=stats.padded_tokens,
            seconds=stats.inference_seconds,
            queue_seconds=stats.queue_seconds,
        )

    return on_batch


def observe_ray_lines(metrics: Metrics, *, node: str, lines: int) -> None:
    """``serve --ray-address``, once per chunk and node: the job lines that node's actors embedded."""
    metrics.ray_lines.labels(node=node).inc(lines)


def observe_abandoned_decode(metrics: Metrics, *, how: AbandonHow) -> None:
    """api/bodies.py, once per big body whose client hung up before its decode ended: ``how`` is ``skipped`` (it
    never began) or ``killed`` (its worker was killed); a decode left to finish is not counted."""
    metrics.body_decodes_abandoned.labels(how=how).inc()


def set_queue(metrics: Metrics, *, depth: int, tokens: int) -> None:
    """Scheduler, whenever the queue changes: inputs and tokens waiting (or use ``track_queue`` once)."""
    metrics.queue_depth.set(depth)
    metrics.queued_tokens.set(tokens)


def track_queue(metrics: Metrics, *, depth: Callable[[], float], tokens: Callable[[], float]) -> None:
    """App start-up, once: read the queue gauges from the engine at scrape time (no call in the hot path)."""
    metrics.queue_depth.set_function(depth)
    metrics.queued_tokens.set_function(tokens)


def set_model_info(metrics: Metrics, *, model: str, backend: str, dtype: str, device: str, dim: int) -> None:
    metrics.model.info({"model": model, "backend": backend, "dtype": dtype, "device": device, "dim": str(dim)})
