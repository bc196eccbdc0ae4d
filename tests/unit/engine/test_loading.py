"""Model loading: served names, pooling and normalisation from the files, and clear errors instead of tracebacks."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from embedserve.engine.loading import load_model
from embedserve.errors import ModelLoadError
from embedserve.settings import EngineSettings


def test_bge_reference_dir_reads_cls_pooling_normalize_and_512(reference_model_dir: Path) -> None:
    model = load_model(EngineSettings(model=str(reference_model_dir), load_format="dummy"))
    assert model.pooling == "cls" and model.normalize and model.max_seq_length == 512
    assert model.config.hidden_size == 1024 and model.config.num_layers == 24 and model.weights_path is None
    assert model.served_name == "bge-large-en-v1.5"


def test_minilm_dir_reads_mean_pooling_and_weights(minilm_model_dir: Path) -> None:
    model = load_model(EngineSettings(model=str(minilm_model_dir), served_model_name="minilm"))
    assert model.pooling == "mean" and model.normalize and model.served_name == "minilm"
    assert model.weights_path is not None and model.weights_path.name == "model.safetensors"


def test_missing_weights_suggest_dummy(reference_model_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match="--load-format dummy"):
        load_model(EngineSettings(model=str(reference_model_dir)))


def test_missing_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(EngineSettings(model=str(tmp_path / "nope")))


def test_offline_hub_fails_fast_naming_model_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    started = time.monotonic()
    with pytest.raises(ModelLoadError) as err:
        load_model(EngineSettings(model="BAAI/bge-large-en-v1.5", cache_dir=tmp_path))
    assert "--model DIR" in err.value.message and "BAAI/bge-large-en-v1.5" in err.value.message
    assert time.monotonic() - started < 10


def test_unsupported_pooling_is_refused(reference_model_dir: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / "m"
    shutil.copytree(reference_model_dir, model_dir)
    (model_dir / "1_Pooling" / "config.json").write_text('{"pooling_mode_max_tokens": true}')
    with pytest.raises(ModelLoadError, match="Unsupported pooling"):
        load_model(EngineSettings(model=str(model_dir), load_format="dummy"))
