"""Real weights (all-MiniLM-L6-v2): the onnx backend against torch fp32, its graph cache, and its dtype errors.

float32 must hold the fidelity gate (cosine >= 0.99999, batch-invariant); int8 states its measured parity (run with
``-s`` to see the figures) and is only held to a floor, since it is opt-in.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest

from embedserve.engine import Engine, EngineSettings
from embedserve.engine.backends import onnx_build
from embedserve.errors import InvalidRequestError, ModelLoadError
from tests.model.corpus import RETRIEVAL_PASSAGES, RETRIEVAL_QUERIES, varied_sentences

T = TypeVar("T")
ALONE_SAMPLE = slice(None, None, 13)  # 40 texts of every kind, embedded one at a time


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.asarray(np.sum(a * b, axis=1))


def rankings(vectors: np.ndarray) -> np.ndarray:
    """Passage indices per query, best first, from rows laid out as corpus + queries + passages."""
    n_q, n_p = len(RETRIEVAL_QUERIES), len(RETRIEVAL_PASSAGES)
    queries, passages = vectors[-(n_q + n_p) : -n_p], vectors[-n_p:]
    return np.argsort(-(queries @ passages.T), axis=1, kind="stable")


def with_engine(settings: EngineSettings, use: Callable[[Engine], Awaitable[T]]) -> T:
    async def main() -> T:
        engine = Engine(settings)
        await engine.start()
        try:
            return await use(engine)
        finally:
            await engine.stop()

    return asyncio.run(main())


async def embed(engine: Engine, texts: list[str]) -> np.ndarray:
    return await engine.embed(await engine.tokenize(texts, truncate=True))


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return varied_sentences(520) + RETRIEVAL_QUERIES + RETRIEVAL_PASSAGES


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("embedserve-cache")


def settings_for(model_dir: Path, *, backend: str, dtype: str, cache_dir: Path) -> EngineSettings:
    return EngineSettings.model_validate(
        {
            "model": str(model_dir),
            "backend": backend,
            "dtype": dtype,
            "cache_dir": cache_dir,
            "max_batch_tokens": 4096,
            "max_padding_ratio": 1000,
        }
    )


@pytest.fixture(scope="module")
def reference(minilm_model_dir: Path, texts: list[str], cache_dir: Path) -> np.ndarray:
    settings = settings_for(minilm_model_dir, backend="torch", dtype="float32", cache_dir=cache_dir)
    return with_engine(settings, lambda engine: embed(engine, texts))


@pytest.fixture(scope="module")
def onnx_fp32(minilm_model_dir: Path, texts: list[str], cache_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    async def use(engine: Engine) -> tuple[np.ndarray, np.ndarray]:
        assert (engine.info.backend, engine.info.dtype, engine.info.device) == ("onnx", "float32", "cpu")
        return await batched_and_alone(engine, texts)

    settings = settings_for(minilm_model_dir, backend="onnx", dtype="float32", cache_dir=cache_dir)
    return with_engine(settings, use)


async def batched_and_alone(engine: Engine, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """All texts in mixed batches, and a sample of them each embedded alone."""
    batched = await embed(engine, texts)
    alone = np.stack([(await embed(engine, [t]))[0] for t in texts[ALONE_SAMPLE]])
    return batched, alone


@pytest.fixture(scope="module")
def onnx_int8(
    minilm_model_dir: Path, texts: list[str], cache_dir: Path, onnx_fp32: object
) -> tuple[np.ndarray, np.ndarray]:
    async def use(engine: Engine) -> tuple[np.ndarray, np.ndarray]:
        assert (engine.info.backend, engine.info.dtype) == ("onnx", "int8")
        return await batched_and_alone(engine, texts)

    settings = settings_for(minilm_model_dir, backend="onnx", dtype="int8", cache_dir=cache_dir)
    return with_engine(settings, use)


def test_fp32_matches_torch_fp32(onnx_fp32: tuple[np.ndarray, np.ndarray], reference: np.ndarray) -> None:
    batched, _ = onnx_fp32
    cos = cosines(batched, reference)
    print(f"\nonnx float32 vs torch float32: min cosine {cos.min():.7f}, mean {cos.mean():.7f}")
    assert len(cos) >= 520
    assert cos.min() >= 0.99999, f"min cosine {cos.min():.7f}"
    assert np.allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(rankings(batched), rankings(reference))


def test_fp32_text_alone_equals_text_in_mixed_batch(onnx_fp32: tuple[np.ndarray, np.ndarray]) -> None:
    batched, alone = onnx_fp32
    cos = cosines(alone, batched[ALONE_SAMPLE])
    assert len(cos) >= 40
    assert cos.min() >= 0.99999, f"min cosine {cos.min():.7f}"


def test_int8_text_alone_equals_text_in_mixed_batch(onnx_int8: tuple[np.ndarray, np.ndarray]) -> None:
    # Dynamic quantisation scales activations over the whole batch; the backend runs int8 rows alone to stay invariant.
    batched, alone = onnx_int8
    cos = cosines(alone, batched[ALONE_SAMPLE])
    assert cos.min() >= 0.99999, f"min cosine {cos.min():.7f}"


def test_int8_parity_is_measured_and_above_its_floor(
    onnx_int8: tuple[np.ndarray, np.ndarray], reference: np.ndarray
) -> None:
    batched, _ = onnx_int8
    cos = cosines(batched, reference)[:520]
    ours, theirs = rankings(batched), rankings(reference)
    top1_same = bool(np.array_equal(ours[:, 0], theirs[:, 0]))
    order_same = bool(np.array_equal(ours, theirs))
    figures = (
        f"onnx int8 vs torch float32 on {len(cos)} texts: min cosine {cos.min():.5f}, mean {cos.mean():.5f}; "
        f"retrieval top-1 same for all {len(ours)} queries: {top1_same}, full order same: {order_same}"
    )
    print("\n" + figures)
    # Measured on x86 with AVX-512 VNNI: min 0.965, mean 0.992, top-1 same, full order not. Floors leave margin for
    # other CPUs' integer kernels; int8 misses the 0.999 gate, which is why it is never the default.
    assert cos.min() >= 0.93, figures
    assert cos.mean() >= 0.98, figures
    assert top1_same, figures


def test_second_start_reuses_the_cached_graph(
    minilm_model_dir: Path,
    cache_dir: Path,
    onnx_int8: tuple[np.ndarray, np.ndarray],
    reference: np.ndarray,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_export(*args: object, **kwargs: object) -> None:
        raise AssertionError("exported again although the graph is cached")

    monkeypatch.setattr(onnx_build, "export_onnx", no_export)
    monkeypatch.setattr(onnx_build, "quantize_int8", no_export)
    texts = varied_sentences(8)
    for dtype, expected in (("float32", reference[:8]), ("int8", onnx_int8[0][:8])):
        settings = settings_for(minilm_model_dir, backend="onnx", dtype=dtype, cache_dir=cache_dir)
        vectors = with_engine(settings, lambda engine: embed(engine, texts))
        assert cosines(vectors, expected).min() >= 0.99999


def test_damaged_cached_graph_and_leftover_temp_file_are_never_loaded(
    minilm_model_dir: Path, cache_dir: Path, onnx_fp32: object, reference: np.ndarray, tmp_path: Path
) -> None:
    (graph,) = [p for p in (cache_dir / "onnx").glob(f"*/{onnx_build.MODEL_FILE}") if _is_fp32(p)]
    copy = shutil.copytree(graph.parent, tmp_path / "onnx" / graph.parent.name)
    damaged = copy / onnx_build.MODEL_FILE
    full_size = damaged.stat().st_size
    with damaged.open("r+b") as f:  # as if the disk lost the file's tail
        f.truncate(full_size // 2)
    (copy / f".{onnx_build.MODEL_FILE}.crashed.tmp").write_bytes(b"\x08\x07garbage from a crashed export")

    settings = settings_for(minilm_model_dir, backend="onnx", dtype="float32", cache_dir=tmp_path)
    texts = varied_sentences(8)
    vectors = with_engine(settings, lambda engine: embed(engine, texts))
    assert cosines(vectors, reference[:8]).min() >= 0.99999
    assert damaged.stat().st_size == full_size


def test_failed_export_is_a_model_load_error_and_leaves_no_graph(
    minilm_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crashing_export(model: object, dest: Path) -> None:
        dest.write_bytes(b"half a graph")
        raise RuntimeError("disk full")

    monkeypatch.setattr(onnx_build, "export_onnx", crashing_export)
    settings = settings_for(minilm_model_dir, backend="onnx", dtype="float32", cache_dir=tmp_path)
    with pytest.raises(ModelLoadError, match=r"Could not build the ONNX float32 graph .*disk full"):
        with_engine(settings, lambda engine: embed(engine, ["x"]))
    left = [p.name for p in tmp_path.rglob("*") if p.is_file()]
    assert left == [], f"a failed export left {left}"


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_unsupported_dtype_names_the_ones_onnx_supports(minilm_model_dir: Path, tmp_path: Path, dtype: str) -> None:
    settings = settings_for(minilm_model_dir, backend="onnx", dtype=dtype, cache_dir=tmp_path)
    with pytest.raises(
        InvalidRequestError, match=rf"--dtype {dtype} is not available with the onnx backend.*float32.*int8"
    ):
        with_engine(settings, lambda engine: embed(engine, ["x"]))


def _is_fp32(graph: Path) -> bool:
    return '"variant": "float32"' in (graph.parent / "key.json").read_text()
