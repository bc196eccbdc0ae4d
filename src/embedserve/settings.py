"""The one settings tree (environment prefix ``EMBEDSERVE_``), built once by the CLI and passed down.

``EngineSettings`` is all the engine sees, so the engine can be built without the server (library use, batch jobs).
Nested engine fields read from ``EMBEDSERVE_ENGINE__<FIELD>``; the rest from ``EMBEDSERVE_<FIELD>``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODEL = "BAAI/bge-large-en-v1.5"
BGE_QUERY_INSTRUCTION = "Represent this sentence for searching relevant passages: "

MIN_ADMIN_KEY_CHARS = 20
LoadFormat = Literal["auto", "safetensors", "dummy"]
BackendName = Literal["auto", "torch", "onnx", "fake"]
DType = Literal["auto", "float32", "bfloat16", "float16", "int8"]
LogFormat = Literal["text", "json"]
TokenIdMode = Literal["auto", "wordpiece", "tiktoken", "reject"]
OnOffAuto = Literal["auto", "on", "off"]


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "embedserve"


class EngineSettings(BaseModel):
    """What the engine needs to load a model and run it; nothing about HTTP, keys or credits."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = DEFAULT_MODEL
    served_model_name: str | None = None
    load_format: LoadFormat = "auto"
    seed: int = 0
    backend: BackendName = "auto"
    dtype: DType = "auto"
    device: str = "auto"
    threads: int | None = Field(default=None, ge=1)
    max_batch_tokens: int | None = Field(default=None, ge=512)  # None: 2048 on CPU, 16384 on CUDA
    max_bulk_batch_tokens: int | None = Field(default=None, ge=1)  # None: 512 on CPU, 4096 on CUDA (batch jobs)
    max_padding_ratio: float = Field(default=0.25, ge=0)
    free_padding_tokens: int | None = Field(default=None, ge=0)  # None: 512 on CPU, 4096 on CUDA
    max_batch_size: int = Field(default=256, ge=1)
    batches_in_flight: int | None = Field(default=None, ge=1, le=4)  # None: 1 on CPU, 2 on CUDA
    cuda_graphs: bool = False  # torch on CUDA: replay captured passes for batches up to 4096 padded tokens
    prepacked_weights: OnOffAuto = "auto"  # torch bf16 on CPU: weights reordered once for oneDNN (auto: native bf16)
    max_queued_tokens: int = Field(default=2_000_000, ge=512)
    auto_truncate: bool = False
    query_instruction: str = BGE_QUERY_INSTRUCTION
    token_ids: TokenIdMode = "auto"  # what a token-id array in input means (engine/token_ids.py)
    cache_dir: Path | None = None


class Settings(BaseSettings):
    """Server, gateway and operator settings, plus the engine's."""

    model_config = SettingsConfigDict(env_prefix="EMBEDSERVE_", env_nested_delimiter="__", frozen=True, extra="ignore")

    engine: EngineSettings = EngineSettings()

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    max_inputs: int = Field(default=2048, ge=1)
    max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    body_workers: int = Field(default=2, ge=0)  # processes decoding bodies over 64 KiB; also how many at once
    log_level: str = "info"
    log_format: LogFormat = "text"
    shutdown_timeout: float = Field(default=30.0, ge=0)
    # a request's headers must arrive within this of its first byte; its body may pause at most body_timeout
    header_timeout_seconds: float = Field(default=10.0, gt=0)
    body_timeout_seconds: float = Field(default=60.0, gt=0)
    max_connections: int | None = Field(default=None, ge=1)  # None: the file limit less 10% (at least 64)
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    # >1: that many API processes feed one engine process (multiproc.py); 1: today's single process
    api_processes: int = Field(default=1, ge=1, le=64)

    auth: bool = True
    admin_key: str | None = None  # prefer EMBEDSERVE_ADMIN_KEY or admin_key_file: a command-line flag shows in ps
    admin_key_file: Path | None = None
    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: str | None = None
    redis_url: str | None = None
    credits_per_1k_tokens: float = Field(default=1.0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _read_admin_key_file(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("admin_key_file") and not data.get("admin_key"):
            path = Path(data["admin_key_file"])
            try:
                data = {**data, "admin_key": path.read_text(encoding="utf-8").strip()}
            except OSError as exc:
                raise ValueError(f"cannot read the admin key file {path}: {exc.strerror}") from None
        return data

    @model_validator(mode="after")
    def _metrics_port_apart(self) -> Settings:
        if self.metrics_port is not None and self.metrics_port == self.port != 0:
            raise ValueError(f"--metrics-port {self.metrics_port} is the main port (--port): give it a port of its own")
        return self

    @model_validator(mode="after")
    def _safe_with_api_processes(self) -> Settings:
        """What several API processes need: state they would otherwise each keep apart (docs/operations.md)."""
        n = self.api_processes
        if n > 1 and self.auth and not self.redis_url:
            raise ValueError(
                f"--api-processes {n} with API keys needs --redis-url: each process would keep its own in-memory "
                f"rate-limit counters, so every key's rpm/tpm would be multiplied by {n} (or serve with --no-auth)"
            )
        if n > 1 and self.ray_address:
            raise ValueError(
                f"--api-processes {n} cannot run batch jobs on Ray (--ray-address): each API process would start "
                "its own Ray actors, each loading the model"
            )
        return self

    @field_validator("admin_key")
    @classmethod
    def _strong_admin_key(cls, value: str | None) -> str | None:
        if value is not None and (len(value) < MIN_ADMIN_KEY_CHARS or len(set(value)) < 8):
            raise ValueError(
                f"the admin key must be at least {MIN_ADMIN_KEY_CHARS} characters with 8 distinct ones; "
                "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        return value

    # gateway
    default_rpm: int | None = Field(default=None, ge=0)  # for keys created without --rpm; None or 0: unlimited
    default_tpm: int | None = Field(default=None, ge=0)
    gateway_lease_seconds: float = Field(default=30.0, gt=0)  # a silent replica's reservations refund after this
    # PostgreSQL connect / statement / pool wait bound (a transaction: 3x); past it a request gets 503 + Retry-After
    database_timeout_seconds: float = Field(default=5.0, gt=0)

    # bulk jobs (Files and Batches API); limits default to OpenAI's
    batch_storage_dir: Path | None = None  # None: <data_dir>/files; share one directory between replicas
    batch_max_file_bytes: int = Field(default=200 * 1024 * 1024, ge=1)
    batch_max_requests: int = Field(default=50_000, ge=1)  # lines per input file
    batch_max_inputs: int = Field(default=50_000, ge=1)  # inputs per job, all lines together
    batch_chunk_lines: int = Field(default=64, ge=1)  # lines per durable progress step
    batch_lease_seconds: float = Field(default=30.0, gt=0)  # a replica that stops renewing loses its job after this
    batch_poll_seconds: float = Field(default=1.0, gt=0)
    batch_runner: bool = True  # run claimed jobs in this server process
    ray_address: str | None = None  # embed those jobs' lines on this Ray cluster (`local`: start one; or RAY_ADDRESS)

    @property
    def storage_dir(self) -> Path:
        return self.batch_storage_dir or self.data_dir / "files"
