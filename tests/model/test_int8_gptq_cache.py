"""``--dtype int8``'s GPTQ codes are computed once and reused: a second start reads them from the cache and serves the
same vectors; a damaged cache file is rebuilt, never trusted."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from embedserve.engine import Engine, EngineSettings, int8_recipe
from tests.cpu_features import NEEDS_FAST_INT8

TEXTS = ["Laura is a DJ.", "OK", "What is the capital of France?", "an int8 model, rounded by GPTQ, cached on disk"]


def embed(model_dir: Path, cache: Path) -> np.ndarray:
    settings = EngineSettings(model=str(model_dir), backend="torch", dtype="int8", device="cpu", cache_dir=cache)
    return Engine(settings).embed_texts(TEXTS)


@NEEDS_FAST_INT8
def test_the_second_start_reuses_the_codes_and_a_damaged_file_is_rebuilt(
    minilm_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="embedserve.engine.gptq")
    first = embed(minilm_model_dir, tmp_path)
    (codes,) = (tmp_path / "int8").glob("*/gptq_codes.safetensors")
    assert "GPTQ codes cached at" in caplog.text
    caplog.clear()

    again = embed(minilm_model_dir, tmp_path)
    assert "GPTQ codes from the cache" in caplog.text
    assert np.array_equal(again, first)

    codes.write_bytes(b"\x08\x07 half of a file from a crashed write")
    caplog.clear()
    rebuilt = embed(minilm_model_dir, tmp_path)
    assert "ignoring unreadable cached GPTQ codes" in caplog.text and "GPTQ codes cached at" in caplog.text
    assert np.array_equal(rebuilt, first)
    assert not list(codes.parent.glob(".*.tmp"))


@NEEDS_FAST_INT8
def test_random_weights_skip_gptq_and_cache_nothing(
    minilm_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # --load-format dummy (the README's quickstart replica): GPTQ would spend minutes choosing codes for meaningless
    # weights, at the same speed as round-to-nearest
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("GPTQ ran on random weights")

    monkeypatch.setattr(int8_recipe, "collect_hessians", refuse)
    settings = EngineSettings(
        model=str(minilm_model_dir), load_format="dummy", dtype="int8", device="cpu", cache_dir=tmp_path
    )
    engine = Engine(settings)
    vectors = engine.embed_texts(TEXTS)
    assert engine.info.dtype == "int8" and engine.info.random_weights
    assert vectors.shape == (len(TEXTS), 384) and np.isfinite(vectors).all()
    assert not (tmp_path / "int8").exists()
