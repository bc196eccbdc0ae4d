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
    ours = np.concatenate([gpu.embed_texts(texts[:1]), gpu.embed_texts(texts[1:5]), gpu.embed_texts(texts[5:])])
    cos = np.sum(ours * reference, axis=1)
    print(f"\ncuda float16 with graphs vs cpu float32: min {cos.min():.6f} mean {cos.mean():.6f}")
    assert cos.min() >= 0.999


@pytest.mark.parametrize(("rows", "seq"), [(1, 10), (32, 12), (8, 128), (64, 128)])
def test_a_small_batch_replays_its_graph_and_a_large_one_runs_eagerly(
    reference_model_dir: Path, rows: int, seq: int
) -> None:
    from torch.profiler import ProfilerActivity, profile

    base = EngineSettings(model=str(reference_model_dir), load_format="dummy", device="cuda", dtype="auto")
    eager = create_backend(load_model(base), base)
    graphed_settings = base.model_copy(update={"cuda_graphs": True})
    graphed = create_backend(load_model(graphed_settings), graphed_settings)
    ids = np.random.default_rng(0).integers(1000, 20000, size=(rows, seq), dtype=np.int64)
    mask = np.ones_like(ids)
    cos = np.sum(eager.forward(ids, mask) * graphed.forward(ids, mask), axis=1)
    assert cos.min() >= 0.999
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        graphed.forward(ids, mask)
    ops = {event.key for event in prof.key_averages()}
    replayed = rows * seq <= 4096
    assert ("aten::linear" in ops) != replayed, sorted(ops)  # a replay runs no torch op of the model on the CPU
