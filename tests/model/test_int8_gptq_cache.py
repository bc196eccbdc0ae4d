"""``--dtype int8``'s GPTQ codes are computed once and reused: a second start reads them from the cache and serves the
same vectors; a damaged cache file is rebuilt, never trusted."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from embedserve.engine import Engine, EngineSettings
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
