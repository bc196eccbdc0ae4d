"""``--prepacked-weights`` on against off: library calls of the bf16 torch backend on the bge replica, per batch shape.

    python benchmarks/bench_prepacked.py                       # 1x10, 64x12, 32x24, 16x128, 4x512 tokens
    python benchmarks/bench_prepacked.py --shapes 1x10,8x64 --repeat 5

Both backends load the same seeded replica; each shape's passes alternate between them, ``--repeat`` rounds of
enough passes for ~4k tokens each, and the figure is the median round's ms per pass. The vectors of the two are
compared too (min cosine over the batch): packing changes bf16 rounding only. A/B of the HTTP server:
``bench_server_ab.py --dtype bfloat16 --a=--prepacked-weights=on --b=--prepacked-weights=off``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO), str(REPO / "benchmarks")]

from bench_http import backend_for, write_replica  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="1x10,64x12,32x24,16x128,4x512", help="texts x tokens, comma-separated")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    shapes = [tuple(int(n) for n in shape.split("x")) for shape in args.shapes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = write_replica(Path(tmp) / "replica", 0)
        backends = {
            packing: backend_for(model_dir, "torch", "bfloat16", "cpu", prepacked_weights=packing)
            for packing in ("off", "on")
        }
        print("| texts x tokens | off ms | on ms | on vs off | min cosine on/off |")
        print("|---|---|---|---|---|")
        rng = np.random.default_rng(0)
        for texts, tokens in shapes:
            ids = rng.integers(1000, 20000, size=(texts, tokens)).astype(np.int64)
            ids[:, 0], ids[:, -1] = 101, 102
            mask = np.ones_like(ids)
            vectors = {name: b.forward(ids, mask) for name, b in backends.items()}  # also the warm-up
            passes = max(2, 4096 // (texts * tokens))
            rounds: dict[str, list[float]] = {name: [] for name in backends}
            for r in range(args.repeat):
                for name in ("off", "on") if r % 2 == 0 else ("on", "off"):
                    started = time.perf_counter()
                    for _ in range(passes):
                        backends[name].forward(ids, mask)
                    rounds[name].append((time.perf_counter() - started) / passes * 1000)
            off, on = statistics.median(rounds["off"]), statistics.median(rounds["on"])
            cos = float(np.sum(vectors["on"] * vectors["off"], axis=1).min())
            print(f"| {texts} x {tokens} | {off:.1f} | {on:.1f} | {off / on:.2f}x | {cos:.5f} |", flush=True)


if __name__ == "__main__":
    main()
