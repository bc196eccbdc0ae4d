"""``embedserve serve --api-processes 2`` as a real server: the seed example through the openai SDK, processes dying
(an API process is replaced; the engine's death is a 503 and a failing /ready until it is back), SIGTERM mid-burst,
the same vectors as one process on real MiniLM weights, and the combinations it refuses."""

from __future__ import annotations

import math
import os
import re
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from embedserve.cli import main
from tests.browser.conftest import minilm_dir
from tests.integration import test_official_sdks
from tests.integration.gateway.processes import cli, create_key, start_server
from tests.integration.test_metrics_api import _get, _samples
from tests.integration.test_shutdown import TEXTS, assert_every_accepted_request_answered, sigterm_mid_burst
from tests.paths import REFERENCE_DIR
from tests.serverproc import ServerProcess, free_port, running_server

FAKE = ["--model", str(REFERENCE_DIR), "--backend", "fake", "--no-auth", "--api-processes", "2"]

test_python_sdk_sync_default_and_float_agree = test_official_sdks.test_python_sdk_sync_default_and_float_agree
test_python_sdk_async = test_official_sdks.test_python_sdk_async
test_python_sdk_surfaces_errors = test_official_sdks.test_python_sdk_surfaces_errors


@pytest.fixture(scope="module")
def replica_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """What test_official_sdks serves (the bge replica's tokenizer and name), on two API processes."""
    folder = tmp_path_factory.mktemp("multiproc")
    args = [*FAKE, "--served-model-name", test_official_sdks.SEED_MODEL, "--data-dir", str(folder)]
    with running_server(args, log_path=folder / "server.log") as server:
        _wait_for(lambda: len(_pids(server, "API process")) >= 2, what="both API processes")
        yield server


def _pids(server: ServerProcess, what: str) -> list[int]:
    """The children's pids, as the supervisor logs them."""
    pattern = r"engine process (\d+) ready" if what == "engine" else r"API process \S+ started as pid (\d+)"
    return [int(p) for p in re.findall(pattern, server.log())]


def _wait_for(condition: object, *, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} after {timeout} s")
        time.sleep(0.2)


def _embed(server: ServerProcess, text: str) -> httpx.Response:
    return httpx.post(f"{server.base_url}/v1/embeddings", json={"input": text}, timeout=30)


def test_banner_names_the_processes(replica_server: ServerProcess) -> None:
    assert "2 API processes + 1 engine process" in replica_server.log()
    assert len(set(_pids(replica_server, "API process"))) == 2


def test_a_dead_api_process_is_replaced_and_the_others_keep_serving(replica_server: ServerProcess) -> None:
    victim = _pids(replica_server, "API process")[0]
    os.kill(victim, signal.SIGKILL)
    for _ in range(10):  # new connections each: whichever process accepts, it answers
        assert _embed(replica_server, "still here").status_code == 200
    _wait_for(lambda: len(_pids(replica_server, "API process")) >= 3, what="replacement API process")
    assert httpx.get(f"{replica_server.base_url}/ready", timeout=30).status_code == 200


def test_a_dead_engine_is_a_503_and_a_failing_ready_until_it_is_restarted(replica_server: ServerProcess) -> None:
    (engine,) = _pids(replica_server, "engine")
    os.kill(engine, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while (r := _embed(replica_server, "anyone?")).status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.05)  # the API processes learn of it within milliseconds; allow a slow box
    assert r.status_code == 503 and r.json()["error"]["code"] == "service_unavailable", r.text
    assert "engine process" in r.json()["error"]["message"]
    ready = httpx.get(f"{replica_server.base_url}/ready", timeout=30)
    assert ready.status_code in (503, 200)  # 200 only if the restart already finished
    _wait_for(lambda: len(_pids(replica_server, "engine")) == 2, what="restarted engine")
    _wait_for(lambda: httpx.get(f"{replica_server.base_url}/ready", timeout=30).status_code == 200, what="/ready again")
    assert _embed(replica_server, "back").status_code == 200


def test_metrics_show_the_engine_s_batches_and_every_api_process_s_requests(tmp_path: Path) -> None:
    """/metrics sums what the engine process and both API processes recorded, whichever API process takes it."""
    with running_server([*FAKE, "--data-dir", str(tmp_path)], log_path=tmp_path / "server.log") as server:
        _wait_for(lambda: len(_pids(server, "API process")) >= 2, what="both API processes")
        answers = [_embed(server, f"text number {i} " * (i + 1)) for i in range(6)]  # one after the other: 6 batches
        scrapes = [httpx.get(f"{server.base_url}/metrics", timeout=30) for _ in range(4)]  # new connection each
        log = server.log()
    assert [r.status_code for r in answers] == [200] * 6
    tokens = sum(r.json()["usage"]["prompt_tokens"] for r in answers)
    for scrape in scrapes:
        s = _samples(scrape.text)
        assert _get(s, "embedserve_batch_size_count") == 6 and _get(s, "embedserve_batch_size_sum") == 6
        assert _get(s, "embedserve_batch_tokens_sum") == tokens  # batches of one input: no padding
        assert _get(s, "embedserve_inference_duration_seconds_count") == 6
        assert _get(s, "embedserve_queue_wait_seconds_count") == 6
        assert _get(s, "embedserve_requests_total", route="/v1/embeddings", status="200") == 6  # both processes'
        assert _get(s, "embedserve_tokens_total", key_id="anonymous") == tokens
        assert _get(s, "embedserve_tokenization_duration_seconds_count") == 6
        assert ("embedserve_body_decodes_abandoned_total", frozenset({("how", "killed")})) in s  # summed, at 0
        assert 'embedserve_model_info{backend="fake"' in scrape.text and "process_cpu_seconds_total" in scrape.text
    timed = re.findall(r"POST /v1/embeddings 200 .*queue_ms=[0-9.]+ inference_ms=[0-9.]+", log)
    assert len(timed) == 6, log[-3000:]


def _embed_on_one_api_process(server: ServerProcess, *, stopped: int, key: str, texts: list[str]) -> list[int]:
    """Each text on a new connection while the API process ``stopped`` is SIGSTOPped, so that the other accepts them
    all (if still starting, once started: they wait in the shared backlog); the prompt tokens of each."""
    headers = {"Authorization": f"Bearer {key}"}
    os.kill(stopped, signal.SIGSTOP)
    try:
        url = f"{server.url}/v1/embeddings"
        answers = [httpx.post(url, json={"input": t}, headers=headers, timeout=30) for t in texts]
    finally:
        os.kill(stopped, signal.SIGCONT)
    assert [r.status_code for r in answers] == [200] * len(texts), [r.text for r in answers]
    return [r.json()["usage"]["prompt_tokens"] for r in answers]


def test_metrics_port_serves_every_process_s_sums_without_a_key(tmp_path: Path) -> None:
    """--metrics-port with two API processes and keys on: the open port answers without a key (the main port's
    /metrics wants the admin key) and shows the same sums, requests served by each API process included."""
    key = create_key(["--data-dir", str(tmp_path / "data")])
    admin = "es-admin-" + "p" * 43
    metrics_port = free_port()
    env = {
        "EMBEDSERVE_DATA_DIR": str(tmp_path / "data"),
        "EMBEDSERVE_ADMIN_KEY": admin,
        "EMBEDSERVE_REDIS_URL": "redis://127.0.0.1:6379/0",
        "EMBEDSERVE_API_PROCESSES": "2",
        "EMBEDSERVE_METRICS_PORT": str(metrics_port),
    }
    server = start_server(port=free_port(), env=env, log_path=tmp_path / "server.log")
    try:
        _wait_for(lambda: len(_pids(server, "API process")) >= 2, what="both API processes")
        one, two = _pids(server, "API process")[:2]
        tokens = _embed_on_one_api_process(server, stopped=two, key=key["secret"], texts=["a b", "c d e", "f"])
        tokens += _embed_on_one_api_process(server, stopped=one, key=key["secret"], texts=["g h i j", "k"])
        open_port = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=30)
        refused = httpx.get(f"{server.url}/metrics", timeout=30)
        main = httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {admin}"}, timeout=30)
        elsewhere = httpx.get(f"http://127.0.0.1:{metrics_port}/v1/models", timeout=30)
    finally:
        server.stop()
    assert (open_port.status_code, refused.status_code, main.status_code, elsewhere.status_code) == (200, 401, 200, 404)
    opened, scraped = _samples(open_port.text), _samples(main.text)
    for name, labels in [
        ("embedserve_requests_total", {"route": "/v1/embeddings", "status": "200"}),
        ("embedserve_tokens_total", {"key_id": key["id"]}),
        ("embedserve_inputs_total", {"key_id": key["id"]}),
        ("embedserve_batch_size_count", {}),
        ("embedserve_tokenization_duration_seconds_count", {}),
    ]:
        assert _get(opened, name, **labels) == _get(scraped, name, **labels), name
    assert _get(opened, "embedserve_requests_total", route="/v1/embeddings", status="200") == 5  # 3 + 2
    assert _get(opened, "embedserve_tokens_total", key_id=key["id"]) == sum(tokens)
    assert 'embedserve_model_info{backend="fake"' in open_port.text and "process_cpu_seconds_total" in open_port.text
    assert f"open on http://127.0.0.1:{metrics_port}/metrics" in server.log()


@pytest.mark.slow  # ~60 s on a shared 2-core box (real MiniLM inference, as test_shutdown.py)
def test_sigterm_mid_burst_answers_every_accepted_request_and_exits_zero(tmp_path: Path) -> None:
    args = ["--model", minilm_dir(), "--no-auth", "--api-processes", "2", "--shutdown-timeout", "60"]
    run = sigterm_mid_burst(args, tmp_path=tmp_path)
    assert_every_accepted_request_answered(run)
    # Refused once the API processes have the signal (the parent forwards it: 0.4 s on a loaded 2-core box, so a
    # request 0.3 s after SIGTERM may still be taken); either way it is not dropped.
    refused = isinstance(run.late, httpx.ConnectError)
    assert refused or (isinstance(run.late, httpx.Response) and run.late.status_code == 200), f"late: {run.late!r}"
    assert "engine process stopped" in run.log


def _vectors(args: list[str], folder: Path, texts: list[str]) -> list[list[float]]:
    folder.mkdir()
    with running_server([*args, "--data-dir", str(folder)], log_path=folder / "server.log") as server:
        r = httpx.post(f"{server.base_url}/v1/embeddings", json={"input": texts}, timeout=120)
        assert r.status_code == 200, r.text
        return [d["embedding"] for d in r.json()["data"]]


@pytest.mark.slow  # two real-weight servers
def test_minilm_vectors_equal_one_process_s(tmp_path: Path) -> None:
    texts = [TEXTS[0], "Laura is a DJ.", "A man is eating food.", "The new movie is awesome"]
    base = ["--model", minilm_dir(), "--no-auth", "--dtype", "float32"]
    one = _vectors(base, tmp_path / "one", texts)
    two = _vectors([*base, "--api-processes", "2"], tmp_path / "two", texts)
    for a, b in zip(one, two, strict=True):
        dot = sum(x * y for x, y in zip(a, b, strict=True))
        assert dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b)) >= 0.99999


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ([], "needs --redis-url"),  # API keys on, in-memory rate limits
        (["--no-auth", "--api-processes", "0"], "api_processes"),
        (["--no-auth", "--port", "9999", "--metrics-port", "9999"], "is the main port"),
        (["--no-auth", "--ray-address", "local"], "cannot run batch jobs on Ray"),
    ],
)
def test_unsafe_combinations_are_refused_at_start(
    extra: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["serve", "--model", str(REFERENCE_DIR), "--backend", "fake", "--api-processes", "2", *extra]
    assert main(args) == 2
    assert fragment in capsys.readouterr().err


def test_a_metrics_port_in_use_is_refused_before_the_model_loads() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = cli("serve", *FAKE, "--port", str(free_port()), "--metrics-port", str(port))
    assert out.returncode == 2, out.stderr
    assert f"cannot listen on 127.0.0.1:{port} (--metrics-port)" in out.stderr
    assert "engine" not in out.stderr  # nothing was started


def test_with_keys_and_redis_a_key_s_rpm_holds_across_api_processes(tmp_path: Path) -> None:
    """Two API processes on one SQLite store and one Redis: the key works, and its 4 requests a minute are 4 in all,
    not 4 per process (each request on a new connection, taken by whichever process is free)."""
    data = tmp_path / "data"
    key = create_key(["--data-dir", str(data)], rpm=4)
    env = {
        "EMBEDSERVE_DATA_DIR": str(data),
        "EMBEDSERVE_ADMIN_KEY": "es-admin-" + "m" * 43,
        "EMBEDSERVE_REDIS_URL": "redis://127.0.0.1:6379/0",
        "EMBEDSERVE_API_PROCESSES": "2",
    }
    server = start_server(port=free_port(), env=env, log_path=tmp_path / "server.log")
    try:
        _wait_for(lambda: len(re.findall(r"API process \S+ started", server.log())) >= 2, what="two API processes")
        time.sleep(3)  # the second process's start-up (its lifespan) may still be running
        headers = {"Authorization": f"Bearer {key['secret']}"}
        statuses = [
            httpx.post(f"{server.url}/v1/embeddings", json={"input": "hi"}, headers=headers, timeout=30).status_code
            for _ in range(8)
        ]
        anonymous = httpx.post(f"{server.url}/v1/embeddings", json={"input": "hi"}, timeout=30)
    finally:
        server.stop()
    assert statuses.count(200) == 4 and statuses.count(429) == 4, statuses
    assert anonymous.status_code == 401


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_children_leave_when_the_parent_is_killed_and_the_last_removes_the_server_s_directory(tmp_path: Path) -> None:
    """kill -9 of the parent right after start: the engine and both API processes (one may still be starting) go,
    and the server's private directory (IPC socket, shared metrics) goes with the last of them."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    args = [*FAKE, "--data-dir", str(tmp_path / "data")]
    with running_server(args, log_path=tmp_path / "server.log", env={"TMPDIR": str(temp)}) as server:
        _wait_for(lambda: len(_pids(server, "API process")) >= 2, what="both API processes")
        children = [*_pids(server, "engine"), *_pids(server, "API process")]
        assert [p.name for p in temp.iterdir() if p.name.startswith("embedserve-")], "no server directory in TMPDIR"
    _wait_for(lambda: not any(_alive(p) for p in children), what="children gone", timeout=60)
    assert [p.name for p in temp.iterdir() if p.name.startswith("embedserve-")] == []
