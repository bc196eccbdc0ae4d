"""``embedserve batch run`` on Ray, in one run: tokens/s on a local Ray instance and in-process against the engine's
own library call on the same texts; then (``--two-node``) a two-node Ray cluster on this one machine (``ray start
--head`` plus a second ``ray start --address``, each with its own ``--num-cpus``) and the rows each node embedded.

    python benchmarks/bench_ray.py --scale 0.25 --two-node          # needs embedserve[ray]

The batch run figures count from the model being ready (in-process) or the first chunk back (Ray) to the output
closed; the wall column is the whole command, start-up included.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "src"))
from bench_batch import cli_flags, common_parser, library_tokens_per_s, texts, write_corpus  # noqa: E402


def run(
    args: argparse.Namespace, corpus: Path, out: Path, *extra: str, env: dict[str, str]
) -> tuple[float, float, str]:
    """(tokens/s as the run reports it, wall seconds, stderr) of one ``batch run``."""
    cmd = [sys.executable, "-m", "embedserve", "batch", "run", str(corpus), "-o", str(out), "--text-column", "text",
           "--id-column", "id", *cli_flags(args), *extra]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, timeout=1800)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    final = next(line for line in done.stderr.splitlines() if "batch run done" in line)
    return float(final.split(" tokens/s")[0].rsplit(" ", 1)[-1].replace(",", "")), wall, done.stderr


def ray_cli(*args: str, env: dict[str, str]) -> None:
    ray = str(Path(sys.executable).with_name("ray"))
    subprocess.run([ray, *args], env=env, check=True, capture_output=True, text=True, timeout=300)


def two_node(args: argparse.Namespace, corpus: Path, tmp: Path, env: dict[str, str]) -> str:
    """Rows per node of a run on a head (``--head-cpus``) plus a second node (``--worker-cpus``) started here."""
    env = {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}  # both nodes, and the driver
    port = "6390"
    ray_cli("start", "--head", f"--port={port}", f"--num-cpus={args.head_cpus}", "--include-dashboard=false", env=env)
    try:
        ray_cli("start", f"--address=127.0.0.1:{port}", f"--num-cpus={args.worker_cpus}", env=env)
        _, wall, err = run(args, corpus, tmp / "two.jsonl", "--ray-address", f"127.0.0.1:{port}",
                           "--ray-cpus-per-actor", "1", "--chunk-rows", "4", env=env)  # fmt: skip
    finally:
        ray_cli("stop", "--force", env=env)
    nodes = re.search(r"rows per node: (\{.*\})", err)
    return f"{nodes.group(1) if nodes else '?'} in {wall:.0f} s"


def main() -> None:
    parser = common_parser(__doc__)
    parser.add_argument("--chunk-rows", default="256", help="rows per chunk, both runs (batch run's default)")
    parser.add_argument("--ray-cpus-per-actor", default="1.5", help="for the local run (2 cores: one actor, 2 threads)")
    parser.add_argument("--two-node", action="store_true")
    parser.add_argument("--head-cpus", type=int, default=1, help="logical CPUs of the head node (two-node run)")
    parser.add_argument("--worker-cpus", type=int, default=2, help="logical CPUs of the second node (two-node run)")
    parser.add_argument("--two-node-only", action="store_true", help="skip the throughput passes")
    args = parser.parse_args()
    n = max(8, int(args.texts * args.scale))
    items = texts(n)
    flags = {"model": args.model, "load_format": args.load_format, "dtype": args.dtype, "backend": args.backend}
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    env.pop("RAY_ADDRESS", None)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        write_corpus(tmp / "corpus.jsonl", items)
        print(
            f"bench_ray    model={Path(args.model).name} backend={args.backend} dtype={args.dtype} scale={args.scale}"
        )
        if not args.two_node_only:
            lib, tokens = asyncio.run(library_tokens_per_s(flags, items))
            chunks = ["--chunk-rows", args.chunk_rows]
            here, here_wall, _ = run(args, tmp / "corpus.jsonl", tmp / "here.jsonl", *chunks, env=env)
            local = ["--ray-address", "local", "--ray-cpus-per-actor", args.ray_cpus_per_actor, *chunks]
            on_ray, ray_wall, _ = run(args, tmp / "corpus.jsonl", tmp / "ray.jsonl", *local, env=env)
            print(f"throughput   {n} texts, {tokens} tokens: library {lib:,.0f} tok/s | batch run in-process "
                  f"{here:,.0f} tok/s ({here / lib:.2f}x, wall {here_wall:.0f} s) | batch run on local Ray "
                  f"{on_ray:,.0f} tok/s ({on_ray / lib:.2f}x, wall {ray_wall:.0f} s)", flush=True)  # fmt: skip
        if args.two_node or args.two_node_only:
            print(f"two nodes    {n} rows, per node {two_node(args, tmp / 'corpus.jsonl', tmp, env)}")


if __name__ == "__main__":
    main()
