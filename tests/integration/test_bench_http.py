"""The HTTP benchmark runs end to end: two engines in one run (each served, driven and timed in turn), its table and
its JSON. Slow (about two minutes: bge-large replicas load twice); run it with ``python -m pytest -m slow``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_two_engines_in_one_run_each_give_every_workload(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_http.py"), "--scale", "0.02", "--repeat", "1",
           "--no-baseline", "--engines", "torch:float32,torch:float32", "--json", str(out)]  # fmt: skip
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("## torch float32 (asked torch:float32)") == 2
    assert "nan" not in run.stdout  # without a baseline the ratio column says so, it does not print NaN
    rows = json.loads(out.read_text())["results"]
    per_workload = [r for r in rows if "workload" in r]
    assert sorted(r["workload"] for r in per_workload) == sorted(["short", "medium", "long", "mixed"] * 2)
    assert all(r["tokens_per_s"] > 0 and r["library_tokens_per_s"] > 0 and r["ratio"] is None for r in per_workload)
    summaries = [r for r in rows if "single_http_ms" in r]
    assert len(summaries) == 2 and all(s["bare_forward_ms"] > 0 and s["peak_rss_mib"] > 0 for s in summaries)
