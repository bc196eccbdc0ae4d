"""How uvicorn is configured: one function (``server.uvicorn_config``) for the one-process server and for each API
process of ``--api-processes``, so the two cannot drift."""

from __future__ import annotations

from embedserve import api_process, server
from embedserve.http_protocol import GuardedHttpToolsProtocol
from embedserve.settings import EngineSettings, Settings
from tests.paths import REFERENCE_DIR


def _settings(**overrides: object) -> Settings:
    engine = EngineSettings(model=str(REFERENCE_DIR), backend="fake")
    return Settings(engine=engine, auth=False, **overrides)  # type: ignore[arg-type]


def test_one_process_and_each_api_process_configure_uvicorn_with_the_same_function() -> None:
    assert vars(api_process)["uvicorn_config"] is server.uvicorn_config


def test_uvicorn_runs_our_protocol_timeouts_and_logging() -> None:
    settings = _settings(
        host="127.0.0.1", port=8123, max_connections=77, shutdown_timeout=12.5, body_timeout_seconds=9.0
    )
    config = server.uvicorn_config(settings, object())
    assert (config.host, config.port) == ("127.0.0.1", 8123)
    protocol = config.http
    assert isinstance(protocol, type) and issubclass(protocol, GuardedHttpToolsProtocol)
    assert protocol.max_connections == 77 and protocol.body_timeout == 9.0
    assert config.timeout_graceful_shutdown == 12
    assert config.lifespan == "on" and config.log_config is None and config.access_log is False


def test_without_a_connection_cap_it_leaves_a_tenth_of_the_file_limit() -> None:
    protocol = server.uvicorn_config(_settings(), object()).http
    assert isinstance(protocol, type) and issubclass(protocol, GuardedHttpToolsProtocol)
    assert protocol.max_connections == server.default_max_connections()
