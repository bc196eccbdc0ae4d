"""HTTP benchmark: embedserve (each engine asked for) vs sentence-transformers fp32, same weights, same run.

    python benchmarks/bench_http.py                       # default engine vs the baseline
    python benchmarks/bench_http.py --engines torch:auto,torch:float32,onnx:float32,onnx:int8,torch:int8
    python benchmarks/bench_http.py --soak 600            # + 10 minutes of the mixed workload, RSS at start and end
    python benchmarks/bench_http.py --infinity /work/infinity-venv/bin/python   # + Infinity (bench_peer.py)

The model is the architecture-exact bge-large-en-v1.5 replica (``../shared/reference/bge-large-en-v1.5``, seeded
random weights saved to a temporary model directory, so the server and sentence-transformers load the very same
weights). Workloads are fixed counts of texts built from a fixed seed:

    short ~10 tokens, medium ~128, long ~500, mixed 10-500 (log-uniform)

Each is sent through a bounded pool of concurrent clients (``--concurrency``) as ``/v1/embeddings`` requests in
base64 (what the official SDKs send). Per workload the table gives tokens/s (prompt tokens the server reported / wall
time), p50 and p99 request latency, the ratio to sentence-transformers ``encode`` (batch 32, fp32) on the same texts,
the ratio to the same engine called as a library in this process, and the fraction of the matmul ceiling (measured at
start-up for the engine's dtype) that the tokens/s amount to. Each figure is the median of ``--repeat`` passes, and
the HTTP and library passes alternate, so a noisy neighbour slows both alike.
It also times one short request on an idle server against one bare forward pass of that text, and reports the
server's peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
REPLICA = REPO.parent / "shared" / "reference" / "bge-large-en-v1.5"
sys.path[:0] = [str(REPO / "src"), str(REPO)]

from tests.serverproc import ServerProcess, free_port, start_server  # noqa: E402

from embedserve.engine.backends import create_backend  # noqa: E402
from embedserve.engine.backends.base import Backend  # noqa: E402
from embedserve.engine.backends.torch import cpu_has_fast_int8  # noqa: E402
from embedserve.engine.batching import pad_batch  # noqa: E402
from embedserve.engine.bert import BertEncoder, init_dummy_weights  # noqa: E402
from embedserve.engine.engine import CUDA_BATCH_TOKENS  # noqa: E402
from embedserve.engine.loading import BertConfig, load_model  # noqa: E402
from embedserve.engine.tokenizer import WordPieceTokenizer  # noqa: E402
from embedserve.settings import EngineSettings  # noqa: E402

_TEXT = (
    "the of and to in is was for on that with as by at from his it an were are which this be or has had not first "
    "one their its new after who they have her she two been other when there all during into school time may years "
    "more most only over city some world would where later up such used many can state about national out known "
    "university united then made team three film game season river water music history people system company war "
    "market energy policy model data network language science research light power health court island church"
)
_WORDS = _TEXT.split()


@dataclass(frozen=True)
class Workload:
    name: str
    texts: list[str]
    per_request: int


def make_text(rng: random.Random, tok: WordPieceTokenizer, tokens: int) -> str:
    """A sentence of about ``tokens`` tokens including [CLS] and [SEP]."""
    words = [rng.choice(_WORDS) for _ in range(max(1, tokens - 2))]
    text = " ".join(words).capitalize() + "."
    while tok.encode_texts([text], truncate=True, max_tokens=10_000)[0].length > tokens and len(words) > 1:
        words.pop()
        text = " ".join(words).capitalize() + "."
    return text


def workloads(tok: WordPieceTokenizer, scale: float, seed: int) -> list[Workload]:
    rng = random.Random(seed)

    def n(count: int) -> int:
        return max(4, int(count * scale))

    mixed_lengths = [round(10 * 50 ** rng.random()) for _ in range(n(96))]
    return [
        Workload("short", [make_text(rng, tok, 10) for _ in range(n(640))], per_request=32),
        Workload("medium", [make_text(rng, tok, 128) for _ in range(n(96))], per_request=16),
        Workload("long", [make_text(rng, tok, 500) for _ in range(n(24))], per_request=4),
        Workload("mixed", [make_text(rng, tok, k) for k in mixed_lengths], per_request=8),
    ]


def write_replica(target: Path, seed: int, source: Path = REPLICA) -> Path:
    """The replica with seeded random weights as a normal model directory: the server and ST load the same file.
    ``source`` holds the config and tokenizer (another BERT's, e.g. MiniLM's, for a quick dry run of a script)."""
    from safetensors.torch import save_file

    shutil.copytree(source, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    config = BertConfig.from_dict(json.loads((source / "config.json").read_text()))
    encoder = BertEncoder(config)
    init_dummy_weights(encoder, seed=seed)
    save_file({k: v.contiguous() for k, v in encoder.state_dict().items()}, str(target / "model.safetensors"))
    return target


def matmul_ceiling(dtype: str, threads: int, device: str) -> float:
    """GFLOP/s (GOP/s for int8) of a BERT-large-shaped matmul on these cores (or the GPU) in the engine's dtype."""
    torch.set_num_threads(threads)
    m, k, n = 2048, 1024, 4096
    if device == "cuda":
        m = CUDA_BATCH_TOKENS  # a GPU needs big products to near its peak
        a, b = (torch.randn(m, k, dtype=getattr(torch, dtype), device="cuda"),
                torch.randn(k, n, dtype=getattr(torch, dtype), device="cuda"))  # fmt: skip

        def op() -> object:
            out = a @ b
            torch.cuda.synchronize()
            return out
    elif dtype == "int8" and not cpu_has_fast_int8():
        return float("nan")  # torch._int_mm is a plain loop here (~1 GOP/s): no ceiling for ONNX Runtime's kernels
    elif dtype == "int8":
        a = torch.randint(-127, 127, (m, k), dtype=torch.int8)
        b = torch.randint(-127, 127, (k, n), dtype=torch.int8)

        def op() -> object:
            return torch._int_mm(a, b)
    else:
        dt = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float32}[dtype]
        a, b = torch.randn(m, k, dtype=dt), torch.randn(k, n, dtype=dt)

        def op() -> object:
            return a @ b

    for _ in range(3):
        op()
    # A ceiling is a best case: the fastest of several short windows, so a stray process does not lower it.
    best = 0.0
    for _ in range(8):
        reps, start = 0, time.perf_counter()
        while time.perf_counter() - start < 0.25:
            op()
            reps += 1
        best = max(best, 2 * m * k * n * reps / (time.perf_counter() - start) / 1e9)
    return best


def gflop_per_token(config: BertConfig, seq: float) -> float:
    """Matmul FLOPs per token: the 4 attention projections and the FFN, plus QK^T and AV at sequence length seq."""
    h, i = config.hidden_size, config.intermediate_size
    return config.num_layers * (2 * (4 * h * h + 2 * h * i) + 4 * seq * h) / 1e9


def rss_mib(pid: int) -> tuple[float, float]:
    """(current, peak) resident set of a process, MiB, from /proc (Linux)."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def start_bench_server(model_dir: Path, backend: str, dtype: str, log_path: Path, extra: list[str]) -> ServerProcess:
    """One engine under test, ready (``/ready``; loading real weights can take minutes), or killed and raised."""
    args = ["--model", str(model_dir), "--served-model-name", "bench", "--no-auth", "--backend", backend,
            "--dtype", dtype, "--log-level", "warning", *extra]  # fmt: skip
    return start_server(args, log_path=log_path, timeout=900, ready_path="/ready", interval=0.5)


def server_info(server: ServerProcess) -> dict[str, str]:
    """What the server resolved ``auto`` to: /ready reports backend, dtype and device."""
    return dict(httpx.get(f"{server.url}/ready", timeout=10).json())


async def drive(url: str, workload: Workload, concurrency: int) -> tuple[int, float, list[float]]:
    """Send the workload with at most ``concurrency`` requests in flight: (tokens, seconds, latencies)."""
    chunks = [workload.texts[i : i + workload.per_request] for i in range(0, len(workload.texts), workload.per_request)]
    queue: asyncio.Queue[list[str]] = asyncio.Queue()
    for chunk in chunks:
        queue.put_nowait(chunk)
    latencies: list[float] = []
    tokens = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal tokens
        while not queue.empty():
            chunk = queue.get_nowait()
            t0 = time.perf_counter()
            r = await client.post(
                "/v1/embeddings", json={"model": "bench", "input": chunk, "encoding_format": "base64"}
            )
            latencies.append(time.perf_counter() - t0)
            r.raise_for_status()
            tokens += r.json()["usage"]["prompt_tokens"]

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=600) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        return tokens, time.perf_counter() - start, latencies


def baseline(
    model_dir: Path, loads: list[Workload], tokens_of: dict[str, int], threads: int, device: str, repeat: int
) -> dict[str, float]:
    """sentence-transformers ``encode`` fp32, batch 32: tokens/s per workload (``tokens_of``: counted by our
    tokenizer), the median of ``repeat`` passes."""
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    st = SentenceTransformer(str(model_dir), device=device)
    st.encode(loads[0].texts[:32], batch_size=32)
    out = {}
    for w in loads:
        tokens = tokens_of[w.name]
        runs = []
        for _ in range(repeat):
            start = time.perf_counter()
            st.encode(w.texts, batch_size=32)
            runs.append(tokens / (time.perf_counter() - start))
        out[w.name] = statistics.median(runs)
    del st
    if device == "cuda":
        torch.cuda.empty_cache()
    return out


def replica_tokenizer(model_dir: Path) -> WordPieceTokenizer:
    config = BertConfig.from_dict(json.loads((model_dir / "config.json").read_text()))
    return WordPieceTokenizer(model_dir / "tokenizer.json", vocab_size=config.vocab_size)


def backend_for(model_dir: Path, backend: str, dtype: str, device: str, **more: Any) -> Backend:
    """The engine's backend for ``model_dir``, built in this process (a library call, no HTTP); ``more``: other
    ``EngineSettings`` fields."""
    settings = EngineSettings(model=str(model_dir), backend=backend, dtype=dtype, device=device, **more)  # type: ignore[arg-type]
    return create_backend(load_model(settings), settings)


def bare_forward_ms(engine_backend: Backend, tok: WordPieceTokenizer, text: str, reps: int) -> float:
    """p50 ms of one forward pass of ``text`` alone, in-process (the floor for one request)."""
    ids, mask = pad_batch(tok.encode_texts([text], truncate=True, max_tokens=512), pad_id=tok.pad_id)
    for _ in range(5):
        engine_backend.forward(ids, mask)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        engine_backend.forward(ids, mask)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


LibraryBatches = tuple[list[tuple[np.ndarray, np.ndarray]], int]  # (ids, mask) per batch, and the token count


def library_batches(tok: WordPieceTokenizer, w: Workload) -> LibraryBatches:
    """The library call's input: the workload as length-sorted batches of its request size, and its token count."""
    encodings = sorted(tok.encode_texts(w.texts, truncate=True, max_tokens=512), key=lambda e: e.length)
    batches = [pad_batch(encodings[i : i + w.per_request], pad_id=tok.pad_id)
               for i in range(0, len(encodings), w.per_request)]  # fmt: skip
    return batches, sum(e.length for e in encodings)


def library_tokens_per_s(engine_backend: Backend, work: LibraryBatches) -> float:
    """The library call: those batches through the backend in-process, no HTTP (one warm-up batch first)."""
    batches, tokens = work
    engine_backend.forward(*batches[0])
    start = time.perf_counter()
    for batch_ids, batch_mask in batches:
        engine_backend.forward(batch_ids, batch_mask)
    return tokens / (time.perf_counter() - start)


def single_request_ms(url: str, text: str, reps: int) -> float:
    with httpx.Client(base_url=url, timeout=60) as client:
        times = []
        for i in range(reps + 5):
            t0 = time.perf_counter()
            client.post("/v1/embeddings", json={"model": "bench", "input": text}).raise_for_status()
            if i >= 5:
                times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def soak(server: ServerProcess, loads: list[Workload], seconds: float, concurrency: int) -> tuple[float, float, int]:
    """Run the mixed workload over and over; RSS at rest after the first pass and at the end (MiB), and passes run.

    At rest = 3 s after a pass: the engine hands freed memory back once it has been idle for a second."""
    mixed = next(w for w in loads if w.name == "mixed")
    asyncio.run(drive(server.url, mixed, concurrency))
    time.sleep(3)
    start_rss = rss_mib(server.proc.pid)[0]
    passes, deadline = 1, time.monotonic() + seconds
    while time.monotonic() < deadline:
        asyncio.run(drive(server.url, mixed, concurrency))
        passes += 1
    time.sleep(3)
    return start_rss, rss_mib(server.proc.pid)[0], passes


def against_infinity(
    args: argparse.Namespace, url: str, label: str, model_dir: Path, loads: list[Workload], tokens_of: dict[str, int],
    device: str, work: Path,
) -> list[dict[str, object]]:  # fmt: skip
    """Infinity's server on the same replica directory, passes alternating with ours (bench_peer.py)."""
    import bench_peer

    peer = bench_peer.InfinityServer(args.infinity, model_dir, port=free_port(), device=device,
                                     log_path=work / "infinity.log")  # fmt: skip
    try:
        rows = bench_peer.compare(drive=drive, ours=url, theirs=peer.url, loads=loads, tokens_of=tokens_of,
                                  concurrency=args.concurrency, repeat=args.repeat)  # fmt: skip
    finally:
        peer.stop()
    return bench_peer.report(label, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", default="auto:auto", help="comma-separated backend:dtype pairs")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every workload's text count")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3, help="passes per workload (HTTP, library, baseline): medians")
    parser.add_argument("--soak", type=float, default=0, help="seconds of mixed load on the first engine (RSS drift)")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--infinity", type=Path, metavar="PYTHON",
                        help="an interpreter with infinity-emb installed: Infinity as a second baseline "
                        "(benchmarks/bench_peer.py), against the first engine")  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--server-arg", action="append", default=[], help="extra flag for embedserve serve")
    parser.add_argument("--api-processes", type=int, default=1,
                        help="serve with --api-processes N (bench_api_processes.py compares it with one process "
                        "in the same run)")  # fmt: skip
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="where the server, library call and baseline run (auto: cuda if present)")  # fmt: skip
    parser.add_argument("--replica", type=Path, default=REPLICA,
                        help="config and tokenizer to replicate (a BERT whose context holds ~500 tokens)")  # fmt: skip
    args = parser.parse_args()
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")

    threads = len(os.sched_getaffinity(0))
    work = Path(tempfile.mkdtemp(prefix="embedserve-bench-"))
    model_dir = write_replica(work / "replica", seed=args.seed, source=args.replica)
    config = BertConfig.from_dict(json.loads((model_dir / "config.json").read_text()))
    tok = replica_tokenizer(model_dir)
    loads = workloads(tok, args.scale, args.seed)
    batches_of = {w.name: library_batches(tok, w) for w in loads}  # each workload tokenised once, for every use
    tokens_of = {name: tokens for name, (_, tokens) in batches_of.items()}
    mean_len = {w.name: tokens_of[w.name] / len(w.texts) for w in loads}
    where = torch.cuda.get_device_name() if device == "cuda" else f"{threads} cores"
    print(f"# {where}, torch {torch.__version__}, replica at {model_dir}")
    print("# workloads: " + ", ".join(f"{w.name} {len(w.texts)} texts ~{mean_len[w.name]:.0f} tok" for w in loads))

    base = {} if args.no_baseline else baseline(model_dir, loads, tokens_of, threads, device, args.repeat)
    if base:
        print("# sentence-transformers fp32 tokens/s: " + ", ".join(f"{k} {v:.0f}" for k, v in base.items()))

    results = []
    for spec in args.engines.split(","):
        backend, dtype = spec.split(":")
        extra = ["--device", device, *args.server_arg]
        if args.api_processes > 1:
            extra += ["--api-processes", str(args.api_processes)]
        try:
            server = start_bench_server(model_dir, backend, dtype, work / f"server-{backend}-{dtype}.log", extra)
        except RuntimeError as exc:  # e.g. int8 refused on this CPU: report it and go on with the other engines
            print(f"\n## {spec}: the server did not start, skipped\n{str(exc).strip()[-400:]}")
            continue
        try:
            info = server_info(server)
            eng_backend, eng_dtype = info["backend"], info["dtype"]
            ceiling = matmul_ceiling(eng_dtype, threads, device)
            label = f"{eng_backend} {eng_dtype}"
            # The same engine as a library call in this process, built once the server is up (it idles while the
            # library runs). HTTP and library passes alternate, so a noisy neighbour hits both alike; medians.
            engine_backend = backend_for(model_dir, eng_backend, eng_dtype, device)
            rows, library = [], {}
            for w in loads:
                asyncio.run(drive(server.url, Workload(w.name, w.texts[: w.per_request * 2], w.per_request), 2))
                http_runs, lib_runs, lat = [], [], []
                for _ in range(args.repeat):
                    tokens, seconds, run_lat = asyncio.run(drive(server.url, w, args.concurrency))
                    http_runs.append(tokens / seconds)
                    lat += run_lat
                    lib_runs.append(library_tokens_per_s(engine_backend, batches_of[w.name]))
                library[w.name] = statistics.median(lib_runs)
                rows.append((w, statistics.median(http_runs), np.percentile(lat, 50) * 1000,
                             np.percentile(lat, 99) * 1000))  # fmt: skip
            text = loads[0].texts[0]
            bare = bare_forward_ms(engine_backend, tok, text, reps=30)
            engine_backend.close()
            del engine_backend
            http_ms = single_request_ms(server.url, text, reps=30)
            rss, peak = rss_mib(server.proc.pid)
            if args.infinity and spec == args.engines.split(",")[0]:
                results += against_infinity(args, server.url, label, model_dir, loads, tokens_of, device, work)
            soak_result = None
            if args.soak and spec == args.engines.split(",")[0]:
                soak_result = soak(server, loads, args.soak, args.concurrency)
        finally:
            server.terminate(timeout=60)
        print(f"\n## {label} (asked {spec}); matmul ceiling {ceiling:.0f} G(FL)OP/s")
        print("| workload | tokens/s (HTTP) | p50 ms | p99 ms | vs sentence-transformers | vs library call "
              "| of matmul ceiling |")  # fmt: skip
        print("|---|---|---|---|---|---|---|")
        for w, tps, p50, p99 in rows:
            ratio = tps / base[w.name] if base else None
            frac = tps * gflop_per_token(config, mean_len[w.name]) / ceiling
            lib = tps / library[w.name]
            vs_base = f"{ratio:.2f}x" if ratio is not None else "–"
            print(f"| {w.name} | {tps:.0f} | {p50:.0f} | {p99:.0f} | {vs_base} | {lib:.2f}x "
                  f"({library[w.name]:.0f}) | {frac:.0%} |")  # fmt: skip
            results.append({"engine": label, "workload": w.name, "tokens_per_s": tps, "p50_ms": p50,
                            "p99_ms": p99, "ratio": ratio, "library_tokens_per_s": library[w.name],
                            "ceiling_fraction": frac})  # fmt: skip
        print(f"single short request on an idle server: p50 {http_ms:.1f} ms; bare forward of that text "
              f"{bare:.1f} ms -> {http_ms / bare:.2f}x")  # fmt: skip
        print(f"server RSS {rss:.0f} MiB after the run, peak {peak:.0f} MiB")
        if soak_result:
            print(f"soak {args.soak:.0f}s of the mixed workload: RSS {soak_result[0]:.0f} -> {soak_result[1]:.0f} MiB "
                  f"over {soak_result[2]} passes")  # fmt: skip
        results.append({"engine": label, "single_http_ms": http_ms, "bare_forward_ms": bare, "rss_mib": rss,
                        "peak_rss_mib": peak, "soak": soak_result})  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"baseline": base, "results": results}, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
