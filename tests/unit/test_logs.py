"""Logging: JSON lines, text lines, the access line's fields, and uvicorn's records routed through ours."""

from __future__ import annotations

import io
import json
import logging

import pytest

from embedserve.logs import ACCESS_LOGGER, configure_logging, log_request


def _access(logger: logging.Logger, **overrides: object) -> None:
    fields: dict[str, object] = {
        "request_id": "req_1", "key_id": "key_9", "method": "POST", "path": "/v1/embeddings", "status": 200,
        "inputs": 2, "tokens": 14, "duration_ms": 12.34567, "queue_ms": 1.5, "inference_ms": 8.25,
    }  # fmt: skip
    fields.update(overrides)
    log_request(logger, **fields)  # type: ignore[arg-type]


def test_json_format_writes_one_object_per_line_with_request_fields() -> None:
    stream = io.StringIO()
    configure_logging(level="info", fmt="json", stream=stream)
    _access(logging.getLogger(ACCESS_LOGGER))
    _access(logging.getLogger(ACCESS_LOGGER), status=401, key_id=None, tokens=None, inputs=None)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["logger"] == ACCESS_LOGGER and first["level"] == "info"
    assert first["message"] == "POST /v1/embeddings 200"
    expected = {"request_id": "req_1", "key_id": "key_9", "status": 200, "inputs": 2, "tokens": 14}
    assert expected.items() <= first.items()
    assert first["duration_ms"] == 12.346 and first["queue_ms"] == 1.5 and first["inference_ms"] == 8.25
    assert "key_id" not in second and "tokens" not in second and second["status"] == 401


def test_access_line_never_carries_input_text() -> None:
    secret = "my private medical history"
    stream = io.StringIO()
    configure_logging(level="info", fmt="json", stream=stream)
    with pytest.raises(TypeError):
        log_request(logging.getLogger(ACCESS_LOGGER), input=secret)  # type: ignore[call-arg]
    _access(logging.getLogger(ACCESS_LOGGER))
    assert secret not in stream.getvalue()


def test_text_format_appends_fields_as_key_value() -> None:
    stream = io.StringIO()
    configure_logging(level="info", fmt="text", stream=stream)
    _access(logging.getLogger(ACCESS_LOGGER))
    line = stream.getvalue().strip()
    assert "INFO embedserve.access: POST /v1/embeddings 200 request_id=req_1 key_id=key_9" in line
    assert "duration_ms=12.346" in line and "method=" not in line


def test_server_errors_log_at_error_level_and_exceptions_are_serialised() -> None:
    stream = io.StringIO()
    configure_logging(level="warning", fmt="json", stream=stream)
    _access(logging.getLogger(ACCESS_LOGGER), status=200)  # below the level: dropped
    _access(logging.getLogger(ACCESS_LOGGER), status=503)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("embedserve.engine").exception("batch failed")
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [r["level"] for r in records] == ["error", "error"]
    assert "RuntimeError: boom" in records[1]["exc_info"]


def test_uvicorn_records_flow_through_ours_and_its_access_log_is_off() -> None:
    stream = io.StringIO()
    configure_logging(level="info", fmt="json", stream=stream)
    logging.getLogger("uvicorn.error").info("Uvicorn running on %s", "http://127.0.0.1:8000")
    logging.getLogger("uvicorn.access").info('127.0.0.1 - "GET / HTTP/1.1" 200')
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [r["logger"] for r in records] == ["uvicorn.error"]


def test_loggers_another_library_disabled_speak_again_once_configured() -> None:
    for name in ("uvicorn.error", "embedserve.server"):  # what dictConfig(disable_existing_loggers=True) does
        logging.getLogger(name).disabled = True
    logging.getLogger("uvicorn.error").setLevel("WARNING")  # what uvicorn.Config(log_level="warning") does
    stream = io.StringIO()
    configure_logging(level="info", fmt="json", stream=stream)
    logging.getLogger("uvicorn.error").info("Uvicorn running")
    logging.getLogger("embedserve.server").info("ready")
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [r["logger"] for r in records] == ["uvicorn.error", "embedserve.server"]
