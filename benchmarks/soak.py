"""Load and soak: a steady mixed workload for a given time, with throughput, latency, errors and RSS over time.

    python benchmarks/soak.py                                  # 60 s, 8 clients, fake backend on the bge tokenizer
    python benchmarks/soak.py --seconds 1800 --clients 16 --interval 60
    python benchmarks/soak.py --serve-args "--model ../shared/reference/bge-large-en-v1.5 --load-format dummy"

Starts ``embedserve serve`` (auth on, SQLite store in a temporary directory, one key with unlimited credits) unless
``--url`` and ``--key`` point at a running server. Each client sends, back to back, a request drawn from a fixed
seed: 1-32 inputs of 5-300 words, float or base64. Every ``--interval`` seconds it prints requests/s, tokens/s,
p50/p99 latency, errors by status, and the server's RSS (main process, and with its body workers); then totals.
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from health_under_attack import _children, _env, _rss_mib, create_key
from tests.paths import REFERENCE_DIR as REFERENCE
from tests.serverproc import ServerProcess, start_server

WORDS = [
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
    "it",
    "an",
    "were",
    "are",
    "which",
    "this",
    "be",
    "or",
    "has",
]


def _request(rng: random.Random) -> dict[str, object]:
    texts = [" ".join(rng.choices(WORDS, k=rng.randint(5, 300))) for _ in range(rng.randint(1, 32))]
    return {"input": texts, "encoding_format": rng.choice(["float", "base64"])}


def _start(serve_args: list[str], port: int, tmp: Path) -> tuple[ServerProcess, str]:
    secret = create_key(tmp, "soak")
    return start_server(serve_args, port=port, env=_env(tmp), log_path=tmp / "server.log", timeout=300), secret


def soak(url: str, key: str, *, seconds: float, clients: int, interval: float, pid: int | None) -> dict[str, object]:
    lock = threading.Lock()
    window: list[tuple[float, int]] = []  # (latency, tokens) of successes in this interval
    errors: Counter[str] = Counter()
    totals = {"requests": 0, "tokens": 0}
    latencies: list[float] = []
    stop = time.monotonic() + seconds

    def client(n: int) -> None:
        rng = random.Random(n)
        with httpx.Client(timeout=120, headers={"Authorization": f"Bearer {key}"}) as http:
            while time.monotonic() < stop:
                started = time.perf_counter()
                try:
                    r = http.post(f"{url}/v1/embeddings", json=_request(rng))
                except httpx.HTTPError as exc:
                    with lock:
                        errors[type(exc).__name__] += 1
                    continue
                took = time.perf_counter() - started
                with lock:
                    if r.status_code == 200:
                        tokens = r.json()["usage"]["prompt_tokens"]
                        window.append((took, tokens))
                        latencies.append(took)
                        totals["requests"] += 1
                        totals["tokens"] += tokens
                    else:
                        errors[str(r.status_code)] += 1

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(clients)]
    for t in threads:
        t.start()
    began = time.monotonic()
    rss_series = []
    columns = ("t(s)", 6), ("req/s", 7), ("tok/s", 8), ("p50 ms", 8), ("p99 ms", 8), ("errors", 7), ("rss MiB", 8)
    print(" ".join(f"{name:>{width}}" for name, width in columns), f"{'+workers':>8}")
    while time.monotonic() < stop:
        time.sleep(min(interval, max(0.0, stop - time.monotonic())))
        with lock:
            batch, window[:] = list(window), []
            errs = sum(errors.values())
        lat = sorted(x for x, _ in batch)
        rss = _rss_mib(pid) if pid else 0.0
        with_workers = rss + (sum(_rss_mib(c) for c in _children(pid)) if pid else 0.0)
        rss_series.append(round(rss))
        q = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) > 1 else [0.0] * 99
        rate, tokens = len(batch) / interval, sum(t for _, t in batch) / interval
        print(f"{time.monotonic() - began:6.0f} {rate:7.1f} {tokens:8.0f} {q[49] * 1000:8.1f} {q[98] * 1000:8.1f} "
              f"{errs:7d} {rss:8.0f} {with_workers:8.0f}", flush=True)  # fmt: skip
    for t in threads:
        t.join(timeout=130)
    q = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else [0.0] * 99
    return {
        "seconds": seconds, "clients": clients, "requests": totals["requests"],
        "requests_per_s": round(totals["requests"] / seconds, 1), "tokens_per_s": round(totals["tokens"] / seconds),
        "p50_ms": round(q[49] * 1000, 1), "p99_ms": round(q[98] * 1000, 1), "errors": dict(errors),
        "rss_mib_first_last_max": [rss_series[0], rss_series[-1], max(rss_series)] if rss_series else [],
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--interval", type=float, default=10)
    parser.add_argument("--url")
    parser.add_argument("--key")
    parser.add_argument("--port", type=int, default=18232)
    parser.add_argument(
        "--serve-args",
        default=f"--model {REFERENCE} --backend fake --served-model-name BAAI/bge-large-en-v1.5",
        help="arguments for the embedserve serve this script starts",
    )
    args = parser.parse_args()
    if args.url:
        result = soak(args.url, args.key, seconds=args.seconds, clients=args.clients, interval=args.interval, pid=None)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            server, key = _start(shlex.split(args.serve_args), args.port, Path(tmp))
            try:
                result = soak(server.url, key, seconds=args.seconds, clients=args.clients, interval=args.interval,
                              pid=server.proc.pid)  # fmt: skip
            finally:
                server.kill()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
