"""Logging setup (``--log-format text|json``) and the one access-log line per request.

The access line carries ids, counts and durations only: ``log_request`` has no parameter for input text.
Run uvicorn with ``log_config=None, access_log=False``: records flow here; this line replaces its own.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

ACCESS_LOGGER = "embedserve.access"
FIELDS_ATTR = "embedserve_fields"  # the LogRecord attribute that carries structured fields
_IN_TEXT_MESSAGE = frozenset({"method", "path", "status"})  # already in the access line's message

LogFormat = Literal["text", "json"]


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, FIELDS_ATTR, None)
    return dict(fields) if isinstance(fields, dict) else {}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, structured fields, and exc_info if any."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_fields(record))
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """The classic line, with structured fields appended as ``key=value``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = " ".join(f"{k}={v}" for k, v in _fields(record).items() if k not in _IN_TEXT_MESSAGE)
        return f"{line} {extra}" if extra else line


def make_formatter(fmt: LogFormat) -> logging.Formatter:
    return JsonFormatter() if fmt == "json" else TextFormatter()


def configure_logging(*, level: str, fmt: LogFormat, stream: TextIO | None = None) -> logging.Handler:
    """Route every logger (uvicorn's too) to one stderr handler in ``fmt``; idempotent."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(make_formatter(fmt))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uv = logging.getLogger(name)
        uv.handlers.clear()
        uv.propagate = True
        uv.setLevel(logging.NOTSET)
    # A library may have silenced logging: logging.disable(), or dictConfig(disable_existing_loggers=True), which
    # disables every logger made before it.
    logging.disable(logging.NOTSET)
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and name.split(".")[0] in ("uvicorn", "embedserve"):
            logger.disabled = False
    logging.getLogger("uvicorn.access").disabled = True  # our access line replaces it
    return handler


def log_request(
    logger: logging.Logger,
    *,
    request_id: str,
    key_id: str | None,
    method: str,
    path: str,
    status: int,
    inputs: int | None,
    tokens: int | None,
    duration_ms: float,
    queue_ms: float | None = None,
    inference_ms: float | None = None,
) -> None:
    """One access line per request; ``None`` fields (not an embeddings call, or not measured) are left out."""
    fields: dict[str, Any] = {
        "request_id": request_id,
        "key_id": key_id,
        "method": method,
        "path": path,
        "status": status,
        "inputs": inputs,
        "tokens": tokens,
        "duration_ms": round(duration_ms, 3),
        "queue_ms": None if queue_ms is None else round(queue_ms, 3),
        "inference_ms": None if inference_ms is None else round(inference_ms, 3),
    }
    fields = {k: v for k, v in fields.items() if v is not None}
    level = logging.ERROR if status >= 500 else logging.INFO  # 499 (the client hung up) is not our error
    logger.log(level, "%s %s %d", method, path, status, extra={FIELDS_ATTR: fields})
