"""Finding and reading a sentence-transformers style model: config, tokenizer, pooling, normalisation, weights.

``--model`` is a local directory, else a hub id looked up in the Hugging Face cache, else downloaded; offline, the
error says how to proceed instead of showing a traceback.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedserve.engine.model_info import Pooling
from embedserve.errors import ModelLoadError
from embedserve.settings import EngineSettings

logger = logging.getLogger(__name__)

_NEEDED_FILES = [
    "config.json",
    "tokenizer.json",
    "modules.json",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
    "model.safetensors",
]
_NORMALIZE = "sentence_transformers.models.Normalize"


@dataclass(frozen=True, slots=True)
class BertConfig:
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float
    hidden_act: str
    pad_token_id: int

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> BertConfig:
        if raw.get("model_type", "bert") != "bert":
            raise ModelLoadError(f"Only BERT models are supported; config.json says model_type={raw['model_type']!r}.")
        return cls(
            vocab_size=int(raw["vocab_size"]),
            hidden_size=int(raw["hidden_size"]),
            num_layers=int(raw["num_hidden_layers"]),
            num_heads=int(raw["num_attention_heads"]),
            intermediate_size=int(raw["intermediate_size"]),
            max_position_embeddings=int(raw.get("max_position_embeddings", 512)),
            type_vocab_size=int(raw.get("type_vocab_size", 2)),
            layer_norm_eps=float(raw.get("layer_norm_eps", 1e-12)),
            hidden_act=str(raw.get("hidden_act", "gelu")),
            pad_token_id=int(raw.get("pad_token_id") or 0),
        )


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """Everything read from the model directory; weights are loaded later by the backend."""

    directory: Path
    source: str
    served_name: str
    config: BertConfig
    pooling: Pooling
    normalize: bool
    max_seq_length: int
    tokenizer_path: Path
    weights_path: Path | None  # None: dummy (seeded random) weights
    seed: int


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelLoadError(f"The model directory has no {path.name} ({path}).") from None
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{path} is not valid JSON: {exc}.") from None


def _offline_message(model: str, reason: str) -> str:
    return (
        f"Could not get {model} from the Hugging Face hub ({reason}). Download the model elsewhere and pass "
        "--model DIR (a directory with config.json, tokenizer.json and model.safetensors), or use "
        "--load-format dummy with a directory holding its config and tokenizer for a random-weight replica."
    )


def resolve_model_dir(model: str, *, cache_dir: Path | None = None) -> Path:
    """A local directory as is; a hub id from the local cache, else downloaded."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    if model.startswith((".", "/", "~")) or model.count("/") > 1:
        raise ModelLoadError(f"The model directory {model} does not exist.")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - a dependency
        raise ModelLoadError(_offline_message(model, "huggingface_hub is not installed")) from None
    kwargs: dict[str, Any] = {"allow_patterns": _NEEDED_FILES, "cache_dir": str(cache_dir) if cache_dir else None}
    try:
        return Path(snapshot_download(model, local_files_only=True, **kwargs))
    except Exception:
        logger.info("%s is not in the local Hugging Face cache; trying the hub", model)
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}:
        raise ModelLoadError(_offline_message(model, "HF_HUB_OFFLINE is set"))
    try:
        os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "10")
        return Path(snapshot_download(model, **kwargs))
    except Exception as exc:
        raise ModelLoadError(_offline_message(model, f"{type(exc).__name__}")) from None


def _pooling(directory: Path, modules: list[dict[str, Any]]) -> Pooling:
    pooling_dir = next(
        (m.get("path", "1_Pooling") for m in modules if str(m.get("type", "")).endswith("Pooling")), "1_Pooling"
    )
    raw = _read_json(directory / pooling_dir / "config.json")
    if raw.get("pooling_mode_cls_token"):
        return "cls"
    if raw.get("pooling_mode_mean_tokens"):
        return "mean"
    modes = [k for k, v in raw.items() if k.startswith("pooling_mode") and v]
    raise ModelLoadError(f"Unsupported pooling {modes}; embedserve supports CLS and mean pooling.")


def load_model(settings: EngineSettings) -> LoadedModel:
    directory = resolve_model_dir(settings.model, cache_dir=settings.cache_dir)
    config = BertConfig.from_dict(_read_json(directory / "config.json"))
    modules: list[dict[str, Any]] = _read_json(directory / "modules.json")
    st_config_path = directory / "sentence_bert_config.json"
    st_config = _read_json(st_config_path) if st_config_path.exists() else {}
    max_len = min(int(st_config.get("max_seq_length", config.max_position_embeddings)), config.max_position_embeddings)
    weights = directory / "model.safetensors"
    if settings.load_format == "dummy" or settings.backend == "fake":
        weights_path = None  # the fake backend (API tests) reads no weights
    elif weights.exists():
        weights_path = weights
    else:
        raise ModelLoadError(
            f"{directory} has no model.safetensors. Pass a directory with the weights, or --load-format dummy "
            "for an architecture-exact replica with random weights."
        )
    if not (directory / "tokenizer.json").exists():
        raise ModelLoadError(f"{directory} has no tokenizer.json (a Hugging Face fast tokenizer is required).")
    is_dir_model = Path(settings.model).expanduser().is_dir()
    served = settings.served_model_name or (directory.resolve().name if is_dir_model else settings.model)
    return LoadedModel(
        directory=directory,
        source=settings.model,
        served_name=served,
        config=config,
        pooling=_pooling(directory, modules),
        normalize=any(m.get("type") == _NORMALIZE for m in modules),
        max_seq_length=max_len,
        tokenizer_path=directory / "tokenizer.json",
        weights_path=weights_path,
        seed=settings.seed,
    )
