"""The inference engine: model loading, tokenisation, token-budget scheduling and backends. No HTTP here."""

from __future__ import annotations

from embedserve.engine.encoding import Encoding
from embedserve.engine.engine import Engine
from embedserve.engine.model_info import ModelInfo
from embedserve.settings import EngineSettings

__all__ = ["Encoding", "Engine", "EngineSettings", "ModelInfo"]
