"""The torch CUDA path (fp16 weights, SDPA): parity with CPU fp32 on MiniLM, and tokens/s on the bge replica.

Marked ``gpu`` (excluded by default): ``python -m pytest -m gpu -s tests/model/test_gpu.py`` on a machine with CUDA.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from embedserve.engine import Engine, EngineSettings
from embedserve.engine.backends import create_backend
from embedserve.engine.backends.base import Backend
from embedserve.engine.loading import load_model
from tests.model.corpus import varied_sentences

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine"),
]


def test_cuda_fp16_matches_cpu_fp32_on_minilm(minilm_model_dir: Path) -> None:
    texts = varied_sentences(520)
    cpu = Engine(EngineSettings(model=str(minilm_model_dir), device="cpu", dtype="float32"))
    gpu = Engine(EngineSettings(model=str(minilm_model_dir), device="cuda", dtype="auto"))
    reference = cpu.embed_texts(texts, truncate=True)
    ours = gpu.embed_texts(texts, truncate=True)
    assert (gpu.info.device, gpu.info.dtype) == ("cuda", "float16")
    cos = np.sum(ours * reference, axis=1)
    print(f"\ncuda float16 vs cpu float32: min {cos.min():.6f} mean {cos.mean():.6f}")
    assert cos.min() >= 0.999


@pytest.mark.parametrize(("seq", "batch"), [(32, 256), (512, 32)])
def test_cuda_fp16_throughput_on_the_replica(reference_model_dir: Path, seq: int, batch: int) -> None:
    settings = EngineSettings(model=str(reference_model_dir), load_format="dummy", device="cuda", dtype="auto")
    backend = create_backend(load_model(settings), settings)
    ids = np.random.default_rng(0).integers(1000, 20000, size=(batch, seq), dtype=np.int64)
    mask = np.ones_like(ids)
    for _ in range(3):
        backend.forward(ids, mask)
    torch.cuda.synchronize()
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < 5:
        backend.forward(ids, mask)  # returns numpy: synchronises
        reps += 1
    tps = batch * seq * reps / (time.perf_counter() - start)
    print(f"\n{torch.cuda.get_device_name()} fp16, {seq} tokens x {batch}: {tps:,.0f} tokens/s")
    assert backend.device.startswith("cuda")
    assert tps > 5_000, "far below any CUDA GPU: is the model really on the device?"  # 2 CPU cores give ~500


def test_cuda_graphs_match_cpu_fp32_on_minilm(minilm_model_dir: Path) -> None:
    """Through the engine, texts of every size (small batches replay a graph, large ones run eagerly)."""
    texts = varied_sentences(520)
    cpu = Engine(EngineSettings(model=str(minilm_model_dir), device="cpu", dtype="float32"))
    gpu = Engine(EngineSettings(model=str(minilm_model_dir), device="cuda", dtype="auto", cuda_graphs=True))
    reference = cpu.embed_texts(texts, truncate=True)
    parts = [texts[:1], texts[1:5], texts[5:]]
    ours = np.concatenate([gpu.embed_texts(part, truncate=True) for part in parts])
    cos = np.sum(ours * reference, axis=1)
    print(f"\ncuda float16 with graphs vs cpu float32: min {cos.min():.6f} mean {cos.mean():.6f}")
    assert cos.min() >= 0.999


@pytest.fixture(scope="module")
def eager_and_graphed(reference_model_dir: Path) -> tuple[Backend, Backend]:
    """The bge replica on the GPU twice, the same weights: plain passes, and with ``--cuda-graphs``."""
    base = EngineSettings(model=str(reference_model_dir), load_format="dummy", device="cuda", dtype="auto")
    graphed = base.model_copy(update={"cuda_graphs": True})
    return create_backend(load_model(base), base), create_backend(load_model(graphed), graphed)


def test_replays_in_any_order_match_eager_passes(eager_and_graphed: tuple[Backend, Backend]) -> None:
    """Buckets replayed in mixed order, one of them again with other ids: each result is its own batch's (no
    stale input, no output overwritten by another graph sharing the pool)."""
    eager, graphed = eager_and_graphed
    rng = np.random.default_rng(0)
    for rows, seq in [(1, 10), (32, 12), (1, 10), (8, 128), (3, 17), (32, 12), (200, 16), (1, 500)]:
        ids = rng.integers(1000, 20000, size=(rows, seq), dtype=np.int64)
        mask = np.ones_like(ids)
        mask[0, seq // 2 :] = 0  # one row padded within the batch too
        cos = np.sum(eager.forward(ids, mask) * graphed.forward(ids, mask), axis=1)
        assert cos.min() >= 0.999, (rows, seq, cos.min())


@pytest.mark.parametrize(("rows", "seq"), [(1, 10), (32, 12), (64, 128)])
def test_a_small_batch_replays_its_graph_and_a_large_one_runs_eagerly(
    eager_and_graphed: tuple[Backend, Backend], rows: int, seq: int
) -> None:
    from torch.profiler import ProfilerActivity, profile

    _, graphed = eager_and_graphed
    ids = np.random.default_rng(0).integers(1000, 20000, size=(rows, seq), dtype=np.int64)
    mask = np.ones_like(ids)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        graphed.forward(ids, mask)
    ops = {event.key for event in prof.key_averages()}
    replayed = rows * seq <= 4096  # (64, 128) is past the largest bucket
    assert ("aten::linear" in ops) != replayed, sorted(ops)  # a replay runs no torch op of the model on the CPU
