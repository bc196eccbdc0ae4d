"""int8 speed per recipe on the bge-large replica: library calls, against torch bf16 or fp32 in the same run
(VNNI/AMX CPUs).

    python benchmarks/int8_speed.py                                   # bf16 and four recipes, scale 0.25
    python benchmarks/int8_speed.py --variants bf16,bf16-ffn-out,out64 --scale 1
    python benchmarks/int8_speed.py --variants fp32,gptq+out32,bf16   # no native bf16: the served int8 against fp32

``int8_fidelity.py`` measures what a recipe does to the vectors; this measures what it costs. Each variant is the
served torch backend (``--dtype int8`` with the named recipe from ``engine/int8_recipe.py``, the served one being
``gptq+out32``; or ``bf16`` / ``fp32``, ``--dtype bfloat16`` / ``float32``) on the architecture-exact replica with
seeded random weights (speed depends on shapes, not values), fed bench_http's short, medium and mixed workloads as
length-sorted library batches. Passes alternate between variants, ``--repeat`` times; the figures are medians, each
against the first variant's: put ``bf16`` first where the CPU has native bf16 (AMX, AVX512-BF16), ``fp32`` first where
bf16 is only emulated (AVX512-VNNI without AVX512-BF16: Cascade Lake, Ice Lake, where ``--dtype auto`` serves int8 and
fp32 is the unquantised reference). Then the FFN down projection alone (a 2048 x 4096 fp32 input, bge-large's widest
activation at the CPU's default 2048-token batch): bf16, int8 without rotation, int8 with the Hadamard rotation, and
the rotation by itself.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO), str(REPO / "benchmarks")]

from bench_http import (  # noqa: E402
    backend_for,
    library_batches,
    library_tokens_per_s,
    replica_tokenizer,
    workloads,
    write_replica,
)

from embedserve.engine.backends.base import Backend  # noqa: E402
from embedserve.engine.backends.torch import TorchBackend, cpu_has_fast_int8  # noqa: E402
from embedserve.engine.hadamard import HadamardRotation  # noqa: E402
from embedserve.engine.int8_recipe import RECIPES  # noqa: E402
from embedserve.engine.loading import load_model  # noqa: E402
from embedserve.engine.memory import configure_allocator  # noqa: E402
from embedserve.engine.prepacked import onednn_bf16_supported  # noqa: E402
from embedserve.engine.quant import BF16Linear, Int8Linear  # noqa: E402
from embedserve.settings import EngineSettings  # noqa: E402

WORKLOADS = ("short", "medium", "mixed")
FLOAT_VARIANTS = {"bf16": "bfloat16", "fp32": "float32"}  # fp32: the baseline where bf16 is emulated (no AVX512-BF16)


def variant_backend(model_dir: Path, variant: str) -> Backend:
    """The served torch backend: bf16 or fp32, or int8 built (and calibrated, once) with ``variant``'s recipe."""
    if variant in FLOAT_VARIANTS:
        return backend_for(model_dir, "torch", FLOAT_VARIANTS[variant], "cpu")
    settings = EngineSettings(model=str(model_dir), backend="torch", dtype="int8", device="cpu")
    configure_allocator()  # as create_backend does for the served backend
    return TorchBackend(load_model(settings), settings, int8_recipe=RECIPES[variant][1])


def ms(fn: Callable[[], object], reps: int = 10) -> float:
    fn()
    fn()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps * 1000


def ffn_out_layer(rows: int) -> None:
    """One bge-large FFN down projection (4096 -> 1024) on ``rows`` tokens, each way it can run."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(rows, 4096, generator=gen)
    linear = nn.Linear(4096, 1024)
    smooth = torch.rand(4096, generator=gen) + 0.5
    outliers = torch.arange(16)
    rotation = HadamardRotation(4096)
    layers = {
        "bf16, plain": BF16Linear(linear),
        "bf16, prepacked (today's recipe)": BF16Linear(linear, prepack=onednn_bf16_supported()),
        "int8, smoothed + 16 outliers, no rotation": Int8Linear(linear, smooth, outliers),
        "int8, rotated, smoothed + 16 outliers": Int8Linear(linear, smooth, outliers, rotation=rotation),
    }
    with torch.inference_mode():
        for name, layer in layers.items():
            print(f"  {name:<44} {ms(partial(layer, x)):7.1f} ms")
        print(f"  {'the rotation alone':<44} {ms(lambda: rotation(x)):7.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="bf16,bf16-ffn-out,rot-ffn-out+smooth,out64,rot-all",
                        help="comma-separated: bf16, fp32 and/or recipe names: " + ", ".join(RECIPES))  # fmt: skip
    parser.add_argument("--scale", type=float, default=0.25, help="multiply every workload's text count")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if not cpu_has_fast_int8():
        parser.error("int8 is refused on this CPU (no AVX512-VNNI or AMX): nothing to time")
    variants = args.variants.split(",")
    model_dir = write_replica(Path(tempfile.mkdtemp(prefix="embedserve-int8-speed-")) / "replica", seed=0)
    tok = replica_tokenizer(model_dir)
    work = {w.name: library_batches(tok, w) for w in workloads(tok, args.scale, seed=0) if w.name in WORKLOADS}
    backends = {v: variant_backend(model_dir, v) for v in variants}
    runs: dict[str, dict[str, list[float]]] = {v: {n: [] for n in work} for v in variants}
    for _ in range(args.repeat):
        for v, backend in backends.items():
            for n, batches in work.items():
                runs[v][n].append(library_tokens_per_s(backend, batches))
    med = {v: {n: statistics.median(r) for n, r in per.items()} for v, per in runs.items()}
    first = variants[0]
    print(f"# {torch.get_num_threads()} threads, torch {torch.__version__}; library tokens/s (x {first})")
    print("| variant | " + " | ".join(work) + " |")
    print("|---|" + "---|" * len(work))
    for v in variants:
        cells = [f"{med[v][n]:.0f} ({med[v][n] / med[first][n]:.2f}x)" for n in work]
        print(f"| {v} | " + " | ".join(cells) + " |")
    print("# FFN down projection, 2048 x 4096 fp32 input:")
    ffn_out_layer(2048)


if __name__ == "__main__":
    main()
