"""Bulk embedding figures, in one run: ``embedserve batch run`` tokens/s against the engine's own library call on
the same texts, peak RSS of ``batch run`` on a small and a large file (flat memory), and online p50/p99 latency of
single short requests with and without a batch job running on the same server.

    python benchmarks/bench_batch.py --model /work/shared/reference/bge-large-en-v1.5 --load-format dummy --scale 0.1

``--scale`` shrinks every workload (texts for the throughput pass, the large RSS file, the online job).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO))
WORDS = tuple(
    [
        "the",
        "of",
        "and",
        "to",
        "in",
        "is",
        "was",
        "for",
        "on",
        "that",
        "with",
        "as",
        "by",
        "at",
        "from",
        "his",
        "an",
        "were",
        "are",
        "which",
        "this",
        "be",
        "or",
        "have",
        "had",
    ]
)


def texts(n: int, *, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 120))) for _ in range(n)]


def write_corpus(path: Path, items: list[str]) -> None:
    with path.open("w") as handle:
        for i, t in enumerate(items):
            handle.write(json.dumps({"id": f"d{i}", "text": t}) + "\n")


async def library_tokens_per_s(engine_flags: dict[str, object], items: list[str]) -> tuple[float, int]:
    from embedserve.engine.engine import Engine
    from embedserve.settings import EngineSettings

    engine = Engine(EngineSettings(**engine_flags))  # type: ignore[arg-type]
    await engine.start()
    try:
        encodings = await engine.tokenize(items, truncate=True)
        tokens = sum(e.length for e in encodings)
        await engine.embed(encodings[:8])  # warm: the first pass pays for kernel selection, not the texts
        started = time.perf_counter()
        await engine.embed(encodings)  # all at once: the scheduler batches by length as it likes (the best case)
        return tokens / (time.perf_counter() - started), tokens
    finally:
        await engine.stop()


def cli_flags(args: argparse.Namespace, *, backend: str | None = None) -> list[str]:
    flags = ["--model", args.model, "--load-format", args.load_format, "--dtype", args.dtype]
    return [*flags, "--backend", backend or args.backend]


def batch_run(args: argparse.Namespace, corpus: Path, out: Path, *, backend: str | None = None) -> tuple[float, int]:
    """Tokens/s (its own figure, from model ready to output closed) and peak RSS (KiB) of one ``batch run``."""
    cmd = ["/usr/bin/time", "-f", "%M", sys.executable, "-m", "embedserve", "batch", "run", str(corpus), "-o",
           str(out), "--text-column", "text", "--id-column", "id", *cli_flags(args, backend=backend)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    final = next(line for line in done.stderr.splitlines() if "batch run done" in line)
    rate = float(final.split(" tokens/s")[0].rsplit(" ", 1)[-1].replace(",", ""))
    return rate, int(done.stderr.strip().splitlines()[-1])


def latencies(url: str, n: int) -> list[float]:
    out = []
    with httpx.Client(base_url=url, headers={"Authorization": "Bearer x"}, timeout=120) as client:
        for i in range(n):
            started = time.perf_counter()
            client.post("/v1/embeddings", json={"input": f"a short query number {i}"}).raise_for_status()
            out.append((time.perf_counter() - started) * 1000)
    return out


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 2 else max(values)


def online(args: argparse.Namespace, tmp: Path, job_lines: int) -> dict[str, float]:
    from tests.serverproc import running_server

    env = {"EMBEDSERVE_BATCH_POLL_SECONDS": "0.2"}
    server_args = [*cli_flags(args), "--no-auth", "--data-dir", str(tmp / "data")]
    with running_server(server_args, log_path=tmp / "server.log", env=env) as server:
        latencies(server.base_url, 5)  # warm
        idle = latencies(server.base_url, args.requests)
        lines = [{"custom_id": f"c{i}", "method": "POST", "url": "/v1/embeddings", "body": {"input": t}}
                 for i, t in enumerate(texts(job_lines, seed=1))]  # fmt: skip
        data = "".join(json.dumps(x) + "\n" for x in lines).encode()
        with httpx.Client(base_url=server.base_url, headers={"Authorization": "Bearer x"}, timeout=60) as c:
            fid = c.post("/v1/files", files={"file": ("in.jsonl", data)}, data={"purpose": "batch"}).json()["id"]
            bid = c.post("/v1/batches", json={"input_file_id": fid, "endpoint": "/v1/embeddings",
                                              "completion_window": "24h"}).json()["id"]  # fmt: skip
            while c.get(f"/v1/batches/{bid}").json()["status"] != "in_progress":
                time.sleep(0.05)
            busy = latencies(server.base_url, args.requests)
            status = c.get(f"/v1/batches/{bid}").json()
    return {"idle_p50": pct(idle, 50), "idle_p99": pct(idle, 99), "busy_p50": pct(busy, 50),
            "busy_p99": pct(busy, 99), "job_lines_done_during": status["request_counts"]["completed"]}  # fmt: skip


def common_parser(description: str | None) -> argparse.ArgumentParser:
    """The flags bench_batch.py and bench_ray.py share: the model, its engine, and the corpus size."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(REPO.parent / "shared" / "reference" / "bge-large-en-v1.5"))
    parser.add_argument("--load-format", default="dummy")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--texts", type=int, default=512, help="texts for the throughput pass (before --scale)")
    return parser


def main() -> None:
    parser = common_parser(__doc__)
    parser.add_argument("--requests", type=int, default=50, help="online requests per latency pass")
    args = parser.parse_args()
    n = max(8, int(args.texts * args.scale))
    items = texts(n)
    engine_flags = {"model": args.model, "load_format": args.load_format, "dtype": args.dtype, "backend": args.backend}
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        lib, tokens = asyncio.run(library_tokens_per_s(engine_flags, items))
        write_corpus(tmp / "corpus.jsonl", items)
        run_rate, _ = batch_run(args, tmp / "corpus.jsonl", tmp / "out.parquet")
        small, large = 1_000, max(1_000, int(100_000 * args.scale))
        rss = {}
        for size in (small, large):
            write_corpus(tmp / f"rss{size}.jsonl", texts(size, seed=2))
            rss[size] = batch_run(args, tmp / f"rss{size}.jsonl", tmp / f"rss{size}.parquet", backend="fake")[1]
        lat = online(args, tmp, job_lines=max(64, int(2000 * args.scale)))
    print(f"bench_batch  model={Path(args.model).name} backend={args.backend} dtype={args.dtype} scale={args.scale}")
    print(f"throughput   {n} texts, {tokens} tokens: library {lib:,.0f} tok/s | batch run (model loaded to output "
          f"closed) {run_rate:,.0f} tok/s | ratio {run_rate / lib:.2f}")  # fmt: skip
    print(
        f"peak RSS     batch run (fake backend) {small:,} lines {rss[small] / 1024:,.0f} MiB | {large:,} lines "
        f"{rss[large] / 1024:,.0f} MiB"
    )
    print(
        f"online ms    idle p50 {lat['idle_p50']:.1f} p99 {lat['idle_p99']:.1f} | with a batch running p50 "
        f"{lat['busy_p50']:.1f} p99 {lat['busy_p99']:.1f} ({lat['job_lines_done_during']:.0f} job lines done)"
    )


if __name__ == "__main__":
    main()
