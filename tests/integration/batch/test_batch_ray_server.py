"""``embedserve serve --ray-address local`` end to end: the official Python SDK's batch flow on a real server whose job
lines are embedded by a Ray actor, not by the server's own engine; each line is what ``/v1/embeddings`` on the same
server answers for its body; and once the server stops, no Ray process and no ``~/.ray/auth_token`` is left."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
import signal
import time
from pathlib import Path

import httpx
import openai
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.batch.conftest import sdk_wait
from tests.paths import REFERENCE_DIR
from tests.serverproc import start_server

BODIES = [
    {"input": "Laura is a DJ."},
    {"input": ["Bulk jobs embed whole corpora at once.", "short"]},
    {"input": "The quick brown fox jumps.", "encoding_format": "base64"},
    {"input": "one more line for the second actor call"},
    {"input": "and the last"},
]


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, start time) of every process, from /proc (start time tells a reused pid apart)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            if fields[0] != "Z":  # a zombie has exited; it only waits to be reaped
                found[int(entry.name)] = (int(fields[1]), fields[19])
    return found


def _tree(root: int) -> dict[int, str]:
    """pid -> start time of every process below ``root``."""
    procs, tree, todo = _processes(), {}, [root]
    while todo:
        parent = todo.pop()
        for pid, (ppid, started) in procs.items():
            if ppid == parent and pid not in tree:
                tree[pid] = started
                todo.append(pid)
    return tree


def _alive(tree: dict[int, str]) -> dict[int, str]:
    procs = _processes()
    return {pid: started for pid, started in tree.items() if procs.get(pid, (0, ""))[1] == started}


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _metric(base_url: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples of ``name`` on the server's /metrics (open with --no-auth), by their labels."""
    text = httpx.get(f"{base_url}/metrics", timeout=30).text
    return {tuple(sorted(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples if s.name == name}  # fmt: skip


def _without_per_request(body: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in body.items() if k not in ("id", "created")}


def test_serve_with_a_local_ray_runs_batch_lines_on_a_ray_actor_and_leaves_nothing_behind(tmp_path: Path) -> None:
    if importlib.util.find_spec("ray") is None:
        pytest.skip("Ray is the optional extra embedserve[ray]; CI installs it")
    if not Path("/proc/self/stat").exists():
        pytest.skip("the process checks read /proc")
    home = tmp_path / "home"  # Ray would write its token under ~/.ray: a HOME of the test's own shows it
    home.mkdir()
    args = ["--model", str(REFERENCE_DIR), "--backend", "fake", "--no-auth", "--data-dir", str(tmp_path / "data"),
            "--ray-address", "local"]  # fmt: skip
    env = {"HOME": str(home), "EMBEDSERVE_BATCH_POLL_SECONDS": "0.1", "EMBEDSERVE_BATCH_CHUNK_LINES": "2"}
    server = start_server(args, log_path=tmp_path / "server.log", env=env, timeout=240)
    tree: dict[int, str] = {}
    try:
        tree = _tree(server.proc.pid)
        commands = " ".join(_cmdline(pid) for pid in tree)
        assert "raylet" in commands and "gcs_server" in commands  # the server started its own Ray instance
        assert re.search(r"batch jobs embed on Ray \(local\): actors \d+ x", server.log())
        forward_inputs = _metric(server.base_url, "embedserve_batch_size_sum")[()]  # the server engine's own passes

        client = openai.OpenAI(api_key="any", base_url=f"{server.base_url}/v1")
        data = b"".join(orjson.dumps({"custom_id": f"c{i}", "method": "POST", "url": "/v1/embeddings", "body": b})
                        + b"\n" for i, b in enumerate(BODIES))  # fmt: skip
        uploaded = client.files.create(file=("corpus.jsonl", io.BytesIO(data)), purpose="batch")
        batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h")
        batch = sdk_wait(client, batch, timeout=240)
        assert batch.status == "completed" and batch.output_file_id, batch
        lines = [orjson.loads(x) for x in client.files.content(batch.output_file_id).content.splitlines()]

        # Embedded on Ray: the pool counted every line, and the server's engine ran no forward pass for the job.
        on_ray = _metric(server.base_url, "embedserve_batch_lines_on_ray_total")
        assert sum(on_ray.values()) == len(BODIES) and all(dict(labels)["node"] for labels in on_ray)
        assert _metric(server.base_url, "embedserve_batch_size_sum")[()] == forward_inputs

        assert [line["custom_id"] for line in lines] == [f"c{i}" for i in range(len(BODIES))]  # each once, in order
        for line, body in zip(lines, BODIES, strict=True):
            online = httpx.post(f"{server.base_url}/v1/embeddings", json=body, timeout=60)
            assert online.status_code == 200 and line["response"]["status_code"] == 200
            assert _without_per_request(line["response"]["body"]) == _without_per_request(online.json())
        assert _metric(server.base_url, "embedserve_batch_size_sum")[()] > forward_inputs  # the check can move

        assert server.terminate(timeout=120) == 0
        left = _alive(tree)
        deadline = time.monotonic() + 10  # processes the raylet was stopping as the server exited
        while left and time.monotonic() < deadline:
            time.sleep(0.2)
            left = _alive(tree)
        assert not left, {pid: _cmdline(pid) for pid in left}
        assert "local Ray instance shut down" in server.log()
        assert not (home / ".ray" / "auth_token").exists()
    finally:
        server.kill()
        for pid in _alive(tree):  # only what this server started, by pid, after a failure above
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
