"""``embedserve prepare`` (a real process, as an image build runs it) leaves the engine's caches behind, so the next
start with the same flags builds nothing: int8's GPTQ codes, the ONNX export."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from embedserve.engine import Engine, EngineSettings, int8_recipe
from embedserve.engine.backends import onnx_build
from embedserve.engine.fused import fused_available
from embedserve.settings import BackendName, DType
from tests.cpu_features import NEEDS_FAST_INT8


def prepare(model_dir: Path, cache: Path, *flags: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "embedserve", "prepare", "--model", str(model_dir), "--device", "cpu",
         "--cache-dir", str(cache), *flags],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def refuse(*args: object, **kwargs: object) -> None:
    raise AssertionError("built again although prepare cached it")


@pytest.mark.parametrize(
    ("backend", "dtype", "cached", "builders"),
    [
        pytest.param(
            "torch",
            "int8",
            "int8/*/gptq_codes.safetensors",
            [(int8_recipe, "collect_hessians"), (int8_recipe, "gptq_quantize")],
            marks=NEEDS_FAST_INT8,
            id="torch-int8",
        ),
        pytest.param(
            "onnx",
            "float32",
            f"onnx/*/{onnx_build.MODEL_FILE}",
            [(onnx_build, "export_onnx")],
            id="onnx-float32",
        ),
    ],
)
def test_prepare_caches_what_the_next_start_needs(
    minilm_model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    backend: BackendName,
    dtype: DType,
    cached: str,
    builders: list[tuple[object, str]],
) -> None:
    out = prepare(minilm_model_dir, tmp_path, "--backend", backend, "--dtype", dtype)
    assert f"backend {backend} {dtype} on cpu" in out, out
    (kept,) = tmp_path.glob(cached)
    assert f"cached {kept}" in out, out
    if dtype == "int8" and fused_available():  # the fused kernel is built under the cache dir too
        assert list((tmp_path / "kernels").rglob("*.so")), out
    assert "no cache file written" in prepare(minilm_model_dir, tmp_path, "--backend", backend, "--dtype", dtype)
    for module, name in builders:
        monkeypatch.setattr(module, name, refuse)
    settings = EngineSettings(
        model=str(minilm_model_dir), backend=backend, dtype=dtype, device="cpu", cache_dir=tmp_path
    )
    vectors = Engine(settings).embed_texts(["Laura is a DJ."])
    assert vectors.shape == (1, 384) and np.isfinite(vectors).all()


def test_prepare_refuses_what_serve_refuses_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "embedserve", "prepare", "--model", str(tmp_path / "missing"), "--dtype", "float32"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.startswith("embedserve: error:") and len(done.stderr.splitlines()) == 1, done.stderr


@NEEDS_FAST_INT8
def test_prepare_fails_when_the_int8_codes_cannot_be_cached(minilm_model_dir: Path, tmp_path: Path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    done = subprocess.run(
        [sys.executable, "-m", "embedserve", "prepare", "--model", str(minilm_model_dir), "--device", "cpu",
         "--dtype", "int8", "--cache-dir", str(blocked), "--log-level", "error"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert "embedserve: error: int8's GPTQ codes could not be cached" in done.stderr


def test_prepare_onnx_int8_needs_no_gptq_codes(minilm_model_dir: Path, tmp_path: Path) -> None:
    # onnx's int8 is ONNX Runtime's own quantisation: its cached graphs are the cache, no GPTQ codes are expected
    out = prepare(minilm_model_dir, tmp_path, "--backend", "onnx", "--dtype", "int8")
    assert "backend onnx int8 on cpu" in out and "/onnx/" in out, out
    assert not (tmp_path / "int8").exists()
