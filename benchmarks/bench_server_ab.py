"""A/B of two server settings: two servers on the same replica, up side by side, driven in alternating passes.

    python benchmarks/bench_server_ab.py --dtype float32 --a=--batches-in-flight=1 --b=--batches-in-flight=2

For a change to a scheduling default, where bench_http.py's separate runs are too noisy to tell a few percent:
both servers load the same replica once, then each workload (bench_http's mixed and medium at 8 clients, and the
short texts one per request at 64 clients, ``single``) is sent to A and B in turn, ``--repeat`` times, the order
flipping every round. Per workload: median tokens/s and p50 latency of each, the ratio A/B and every pass's figure.
An idle server uses no CPU, so the one not being driven does not slow the other.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO), str(REPO / "benchmarks")]

from bench_http import drive, replica_tokenizer, start_bench_server, workloads, write_replica  # noqa: E402
from bench_peer import SINGLE_CONCURRENCY, single_load  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", required=True, help="server flags for A (one string, shell-quoted)")
    parser.add_argument("--b", default="", help="server flags for B (default: none, the defaults)")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--scale", type=float, default=0.5, help="multiply every workload's text count")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="embedserve-ab-"))
    model = write_replica(work / "replica", seed=0)
    loads = {w.name: w for w in workloads(replica_tokenizer(model), args.scale, seed=0)}
    single = single_load(loads["short"])
    plan = [(loads["mixed"], 8), (loads["medium"], 8), (single, SINGLE_CONCURRENCY)]
    flags = {"A": shlex.split(args.a), "B": shlex.split(args.b)}
    servers = {k: start_bench_server(model, "torch", args.dtype, work / f"{k}.log", v) for k, v in flags.items()}
    rates: dict[tuple[str, str], list[float]] = {(w.name, k): [] for w, _ in plan for k in servers}
    p50s: dict[tuple[str, str], list[float]] = {(w.name, k): [] for w, _ in plan for k in servers}
    try:
        for w, clients in plan:
            for server in servers.values():
                asyncio.run(drive(server.url, w, clients))  # warm-up pass, not counted
        for round_ in range(args.repeat):
            order = list(servers.items()) if round_ % 2 == 0 else list(reversed(servers.items()))
            for w, clients in plan:
                for key, server in order:
                    tokens, seconds, latencies = asyncio.run(drive(server.url, w, clients))
                    rates[(w.name, key)].append(tokens / seconds)
                    p50s[(w.name, key)].append(statistics.median(latencies) * 1000)
    finally:
        for server in servers.values():
            server.kill()
    print(f"# A: {args.a!r}, B: {args.b!r}, dtype {args.dtype}, scale {args.scale}, {args.repeat} rounds")
    print("| workload | A tok/s (p50 ms) | B tok/s (p50 ms) | A/B | every pass A; B |")
    print("|---|---|---|---|---|")
    for w, _ in plan:
        a, b = (statistics.median(rates[(w.name, k)]) for k in ("A", "B"))
        pa, pb = (statistics.median(p50s[(w.name, k)]) for k in ("A", "B"))
        passes = "; ".join(" ".join(f"{r:.0f}" for r in rates[(w.name, k)]) for k in ("A", "B"))
        print(f"| {w.name} | {a:.0f} ({pa:.0f}) | {b:.0f} ({pb:.0f}) | {a / b:.3f}x | {passes} |")


if __name__ == "__main__":
    main()
