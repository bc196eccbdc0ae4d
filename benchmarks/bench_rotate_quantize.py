"""The fused rotate-and-quantise kernel (engine/fused.py) against the torch passes it replaces, and in Int8Linear.

    python benchmarks/bench_rotate_quantize.py                  # torch's thread count
    python benchmarks/bench_rotate_quantize.py --threads 2 --repeat 30

For each input shape: the torch path (``HadamardRotation``, the outlier gather, smoothing, ``_quantize_rows_shifted_``)
and ``rotate_quantize``, on fp32 rows with 16 outlier channels; 2048 x 4096 is bge-large's FFN-out input at the CPU's
default 2048-token batch. Then one whole ``Int8Linear`` forward (4096 -> 1024, rotated, smoothing factors of ones,
16 outliers) with ``EMBEDSERVE_FUSED_KERNELS`` off and on, and bf16 for reference (needs VNNI or AMX). Figures are
medians of ``--repeat`` timed calls after two warm-up calls, under the served allocator settings (``engine/memory.py``:
without them every 32 MiB temporary is a fresh mmap, page-faulted in, which taxes the torch path most); the first run
also compiles the kernel (its seconds are printed).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO)]

from embedserve.engine.backends.torch import cpu_has_fast_int8  # noqa: E402
from embedserve.engine.fused import ENV_SWITCH, fused_available, rotate_quantize  # noqa: E402
from embedserve.engine.hadamard import HadamardRotation  # noqa: E402
from embedserve.engine.memory import configure_allocator  # noqa: E402
from embedserve.engine.prepacked import onednn_bf16_supported  # noqa: E402
from embedserve.engine.quant import BF16Linear, Int8Linear, _quantize_rows_shifted_  # noqa: E402

SHAPES = ((2048, 4096), (16, 4096), (2048, 1024))
OUTLIERS = 16


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    fn()
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def torch_path(
    x: torch.Tensor, rotation: HadamardRotation, factor: torch.Tensor, outliers: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Int8Linear.forward's steps before the product, as it runs them without the kernel."""
    rows = rotation(x)
    cols = rows[:, outliers]
    q, scale = _quantize_rows_shifted_(rows * factor)
    return q, scale, cols


def kernel_rows(repeat: int) -> list[tuple[str, float, float]]:
    results = []
    for rows, n in SHAPES:
        gen = torch.Generator().manual_seed(n)
        x = torch.randn(rows, n, generator=gen)
        rotation = HadamardRotation(n)
        factor = torch.rand(n, generator=gen) + 0.5
        outliers = torch.arange(OUTLIERS)
        factor[outliers] = 0.0
        slow = median_ms(partial(torch_path, x, rotation, factor, outliers), repeat)
        fast = median_ms(partial(rotate_quantize, x, rotation, act_factor=factor, outliers=outliers), repeat)
        results.append((f"rotate + quantise, {rows} x {n}", slow, fast))
    return results


def layer_rows(repeat: int) -> tuple[list[tuple[str, float, float]], list[str]]:
    """One Int8Linear forward, the kernel switched off then on through the environment; bf16's time for the same
    layer (prepacked where oneDNN has bf16 kernels, as served) goes under the table for reference."""
    results, notes = [], []
    linear = nn.Linear(4096, 1024)
    layer = Int8Linear(linear, torch.ones(4096), torch.arange(OUTLIERS), rotation=HadamardRotation(4096))
    bf16 = BF16Linear(linear, prepack=onednn_bf16_supported())
    for rows in (2048, 16):
        x = torch.randn(rows, 4096, generator=torch.Generator().manual_seed(rows))
        timed = {}
        for switch in ("0", "1"):
            os.environ[ENV_SWITCH] = switch
            timed[switch] = median_ms(partial(layer, x), repeat)
        results.append((f"Int8Linear 4096 -> 1024, {rows} rows", timed["0"], timed["1"]))
        notes.append(f"# the same layer in bf16, {rows} rows: {median_ms(partial(bf16, x), repeat):.3f} ms")
    os.environ.pop(ENV_SWITCH)
    return results, notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    configure_allocator()  # as create_backend does for the served backend
    os.environ.pop(ENV_SWITCH, None)
    start = time.perf_counter()
    if not fused_available():
        parser.error("the fused kernel did not build here (see the warning above)")
    print(f"# kernel built or loaded in {time.perf_counter() - start:.1f} s")
    with torch.inference_mode():
        results, notes = kernel_rows(args.repeat), ["# no VNNI or AMX: Int8Linear rows skipped"]
        if cpu_has_fast_int8():
            layer_results, notes = layer_rows(args.repeat)
            results += layer_results
    print(f"# {torch.get_num_threads()} threads, torch {torch.__version__}; medians of {args.repeat} calls")
    print("| case | torch path ms | fused ms | torch / fused |")
    print("|---|---|---|---|")
    for name, slow, fast in results:
        print(f"| {name} | {slow:.3f} | {fast:.3f} | {slow / fast:.2f}x |")
    print("\n".join(notes))


if __name__ == "__main__":
    main()
