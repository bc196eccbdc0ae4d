"""How long ``/health`` and a normal client wait while other clients post oversized bodies (issue 16, item 1).

    python benchmarks/health_under_attack.py                     # 20 s: 2 keyless + 2 keyed attackers
    python benchmarks/health_under_attack.py --seconds 60 --json

Starts ``embedserve serve`` (fake backend on the bge tokenizer, SQLite store in a temporary directory, a key with
unlimited credits), then for ``--seconds``: ``--noauth`` clients post 30 MB bodies with no key, ``--auth`` clients
post 30 MB bodies with the key (alternately 5M token ids and one 30 MB string), one normal client sends the seed
request back to back, and a probe (in a process of its own) GETs ``/health`` every 20 ms. Prints the probe's
p50/p99/max latency and how many probes took over 100 ms, the normal client's request count and p99, the
attackers' statuses, and the server's peak RSS (main process, and with its body-decoding workers).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO)]
from tests.paths import REFERENCE_DIR as REFERENCE  # noqa: E402
from tests.serverproc import ServerProcess, server_env, start_server  # noqa: E402

SEED = {"input": "Laura is a DJ.", "model": "BAAI/bge-large-en-v1.5"}


def _rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _env(data: Path) -> dict[str, str]:
    return {"EMBEDSERVE_DATA_DIR": str(data), "EMBEDSERVE_ADMIN_KEY": "es-admin-" + "a" * 43}


def create_key(data: Path, name: str) -> str:
    """A key with unlimited credits in the SQLite store under ``data``: its secret."""
    made = subprocess.run(
        [sys.executable, "-m", "embedserve", "keys", "create", "--name", name, "--format", "json"],
        env=server_env(_env(data)), capture_output=True, text=True, check=True,
    )  # fmt: skip
    return str(json.loads(made.stdout)["secret"])


def start(data: Path, port: int, log: Path) -> tuple[ServerProcess, str]:
    secret = create_key(data, "bench")
    args = ["--model", str(REFERENCE), "--backend", "fake", "--served-model-name", "BAAI/bge-large-en-v1.5"]
    return start_server(args, port=port, env=_env(data), log_path=log), secret


def probe(url: str, seconds: float) -> list[float]:
    """GET /health every 20 ms for ``seconds``; the latencies in seconds."""
    stop = time.monotonic() + seconds
    health: list[float] = []
    with httpx.Client(timeout=60) as client:
        while time.monotonic() < stop:
            t = time.perf_counter()
            client.get(url + "/health")
            health.append(time.perf_counter() - t)
            time.sleep(0.02)
    return health


def attack(url: str, seconds: float, *, noauth: int, auth: int, secret: str, pid: int) -> dict[str, object]:
    ids_body = b'{"input":[' + b"2000," * 5_000_000 + b'2000],"model":"BAAI/bge-large-en-v1.5"}'
    text_body = b'{"input":"' + b"word " * 6_000_000 + b'"}'
    stop = time.monotonic() + seconds
    normal: list[float] = []
    statuses: Counter[str] = Counter()
    rss = {"main": _rss_mib(pid), "with_workers": 0.0}

    def attacker(n: int, key: str | None) -> None:
        headers = {"content-type": "application/json", **({"authorization": f"Bearer {key}"} if key else {})}
        with httpx.Client(timeout=120) as client:
            i = 0
            while time.monotonic() < stop:
                body = ids_body if (n + i) % 2 == 0 else text_body
                i += 1
                try:
                    code = client.post(url + "/v1/embeddings", content=body, headers=headers).status_code
                    statuses[f"{'keyed' if key else 'keyless'} {code}"] += 1
                except httpx.HTTPError as exc:
                    statuses[f"{'keyed' if key else 'keyless'} {type(exc).__name__}"] += 1

    def user() -> None:
        with httpx.Client(timeout=60, headers={"authorization": f"Bearer {secret}"}) as client:
            while time.monotonic() < stop:
                t = time.perf_counter()
                if client.post(url + "/v1/embeddings", json=SEED).status_code == 200:
                    normal.append(time.perf_counter() - t)

    def sampler() -> None:
        while time.monotonic() < stop + 2:
            rss["main"] = max(rss["main"], _rss_mib(pid))
            total = _rss_mib(pid) + sum(_rss_mib(c) for c in _children(pid))
            rss["with_workers"] = max(rss["with_workers"], total)
            time.sleep(0.25)

    threads = [threading.Thread(target=attacker, args=(n, None)) for n in range(noauth)]
    threads += [threading.Thread(target=attacker, args=(n, secret)) for n in range(auth)]
    threads += [threading.Thread(target=f) for f in (user, sampler)]
    # The probe runs in a process of its own: in this one it would wait on the attackers' threads for the GIL and
    # measure the client, not the server.
    command = [sys.executable, __file__, "--probe", url, "--seconds", str(seconds)]
    with subprocess.Popen(command, stdout=subprocess.PIPE) as prober:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        out, _ = prober.communicate(timeout=120)
    health: list[float] = json.loads(out)
    q = statistics.quantiles(health, n=100, method="inclusive") if len(health) > 1 else [0.0] * 99
    nq = statistics.quantiles(normal, n=100, method="inclusive") if len(normal) > 1 else [0.0] * 99
    return {
        "seconds": seconds, "noauth_attackers": noauth, "auth_attackers": auth,
        "health_probes": len(health), "health_p50_ms": round(q[49] * 1000, 1),
        "health_p99_ms": round(q[98] * 1000, 1), "health_max_ms": round(max(health, default=0) * 1000, 1),
        "health_over_100ms": sum(h > 0.1 for h in health),
        "normal_requests": len(normal), "normal_p99_ms": round(nq[98] * 1000, 1),
        "attack_statuses": dict(statuses), "rss_peak_main_mib": round(rss["main"]),
        "rss_peak_with_workers_mib": round(rss["with_workers"]),
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--noauth", type=int, default=2)
    parser.add_argument("--auth", type=int, default=2)
    parser.add_argument("--port", type=int, default=18231)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--probe", metavar="URL", help=argparse.SUPPRESS)  # the probe's own process
    args = parser.parse_args()
    if args.probe:
        print(json.dumps(probe(args.probe, args.seconds)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        server, secret = start(Path(tmp), args.port, Path(tmp) / "server.log")
        try:
            pid = server.proc.pid
            result = attack(server.url, args.seconds, noauth=args.noauth, auth=args.auth, secret=secret, pid=pid)
        finally:
            server.kill()
    if args.json:
        print(json.dumps(result))
    else:
        for name, value in result.items():
            print(f"{name:28} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
