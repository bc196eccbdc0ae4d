"""Infinity (``infinity-emb``) as a second baseline for bench_http.py: its server on the same replica directory,
driven by the same client with the same texts, its passes alternating with embedserve's.

    python -m venv /work/infinity-venv
    /work/infinity-venv/bin/pip install 'torch==2.13.0' 'infinity-emb[server,torch]==0.0.78'
    python benchmarks/bench_http.py --infinity /work/infinity-venv/bin/python --scale 0.1

Infinity lives in its own virtualenv (it pins sentence-transformers 3.x and transformers 4.x; never a project
dependency); only its interpreter's path comes in. Its ``usage`` counts characters, so both servers' tokens/s use
the token counts of our tokenizer for the texts sent. On top of bench_http's workloads, ``single`` sends the short
texts one per request from ``SINGLE_CONCURRENCY`` clients at once (the chat-app pattern), with p50/p99.
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import subprocess
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np

if TYPE_CHECKING:  # for annotations only: bench_http imports this module (lazily, for --infinity)
    from bench_http import Workload

SINGLE_CONCURRENCY = 64


def single_load(short: Workload) -> Workload:
    """The ``single`` workload: bench_http's short texts, one per request (sent from ``SINGLE_CONCURRENCY`` clients)."""
    return replace(short, name="single", per_request=1)


INFINITY_BATCH = 32  # its default; sentence-transformers' baseline uses the same


# bench_http.drive; a coroutine function, as asyncio.run needs (not just any awaitable)
Drive = Callable[[str, "Workload", int], Coroutine[Any, Any, tuple[int, float, list[float]]]]


class InfinityServer:
    """``infinity_emb v2`` on ``model_dir`` (torch engine, fp32, CPU or CUDA), routes under ``/v1`` like ours."""

    def __init__(self, python: Path, model_dir: Path, *, port: int, device: str, log_path: Path) -> None:
        self.url = f"http://127.0.0.1:{port}"
        cmd = [str(python), "-m", "infinity_emb.cli", "v2", "--model-id", str(model_dir), "--served-model-name",
               "bench", "--port", str(port), "--host", "127.0.0.1", "--url-prefix", "/v1", "--engine", "torch",
               "--device", device, "--dtype", "float32", "--batch-size", str(INFINITY_BATCH),
               "--no-bettertransformer", "--no-model-warmup", "--log-level", "warning"]  # fmt: skip
        # its telemetry would try the network: off
        env = {**os.environ, "DO_NOT_TRACK": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0", "PYTHONPATH": ""}
        self.log = log_path.open("wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"infinity exited {self.proc.returncode}: {log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=5).status_code == 200:  # /health is not under the prefix
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise TimeoutError("infinity not ready")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@dataclass(frozen=True, slots=True)
class Side:
    tokens_per_s: float
    p50_ms: float
    p99_ms: float


def measure(drive: Drive, url: str, load: Workload, tokens: int, concurrency: int) -> tuple[float, list[float]]:
    """One pass: tokens/s by our count of the texts' tokens (not the server's ``usage``), and the latencies."""
    _, seconds, latencies = asyncio.run(drive(url, load, concurrency))
    return tokens / seconds, latencies


def compare(
    *, drive: Drive, ours: str, theirs: str, loads: Sequence[Workload], tokens_of: dict[str, int], concurrency: int,
    repeat: int,
) -> list[tuple[str, Side, Side]]:  # fmt: skip
    """Per workload (and ``single``): alternating passes, ours then theirs, ``repeat`` times; medians."""
    short = next(w for w in loads if w.name == "short")
    plan = [(w, concurrency) for w in loads] + [(single_load(short), SINGLE_CONCURRENCY)]
    tokens_of = {**tokens_of, "single": tokens_of["short"]}
    rows = []
    for load, conc in plan:
        warm = replace(load, texts=load.texts[: load.per_request * 2])
        runs: dict[str, tuple[list[float], list[float]]] = {ours: ([], []), theirs: ([], [])}
        for url in (ours, theirs):
            asyncio.run(drive(url, warm, 2))
        for _ in range(repeat):
            for url in (ours, theirs):
                tps, lat = measure(drive, url, load, tokens_of[load.name], conc)
                runs[url][0].append(tps)
                runs[url][1].extend(lat)
        sides = [
            Side(statistics.median(t), float(np.percentile(lat, 50) * 1000), float(np.percentile(lat, 99) * 1000))
            for t, lat in (runs[ours], runs[theirs])
        ]
        rows.append((load.name, sides[0], sides[1]))
    return rows


def report(label: str, rows: list[tuple[str, Side, Side]]) -> list[dict[str, Any]]:
    print(f"\n## {label} vs Infinity (torch fp32, batch {INFINITY_BATCH}); alternating passes, medians")
    print("| workload | embedserve tok/s | Infinity tok/s | ratio | p50 ms ours / theirs | p99 ms ours / theirs |")
    print("|---|---|---|---|---|---|")
    out = []
    for name, a, b in rows:
        print(f"| {name} | {a.tokens_per_s:.0f} | {b.tokens_per_s:.0f} | {a.tokens_per_s / b.tokens_per_s:.2f}x "
              f"| {a.p50_ms:.0f} / {b.p50_ms:.0f} | {a.p99_ms:.0f} / {b.p99_ms:.0f} |")  # fmt: skip
        out.append({"engine": label, "peer": "infinity", "workload": name, "ours": asdict(a),
                    "infinity": asdict(b), "ratio": a.tokens_per_s / b.tokens_per_s})  # fmt: skip
    return out
