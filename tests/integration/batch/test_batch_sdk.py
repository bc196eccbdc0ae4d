"""The Batch API through the official SDKs (Python and Node) against a live server on the bge replica."""

from __future__ import annotations

import io
import math
import os
import shutil
import subprocess
from collections.abc import Iterator

import openai
import orjson
import pytest

from tests.integration.batch.conftest import sdk_wait
from tests.paths import REFERENCE_DIR, REPO
from tests.serverproc import ServerProcess, running_server

JS_DIR = REPO / "tests" / "sdk" / "js"
TEXTS = ["Laura is a DJ.", "Bulk jobs embed whole corpora at once.", "short", "The quick brown fox jumps."]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("batch-sdk")
    args = ["--model", str(REFERENCE_DIR), "--load-format", "dummy", "--dtype", "float32", "--no-auth",
            "--data-dir", str(root / "data")]  # fmt: skip
    env = {"EMBEDSERVE_BATCH_POLL_SECONDS": "0.1", "EMBEDSERVE_BATCH_CHUNK_LINES": "2"}
    with running_server(args, log_path=root / "server.log", env=env) as proc:
        yield proc


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_python_sdk_upload_create_poll_download(server: ServerProcess) -> None:
    client = openai.OpenAI(api_key="any", base_url=f"{server.base_url}/v1")
    bodies = [{"input": t} for t in TEXTS] + [{"input": TEXTS[:2], "encoding_format": "base64"}]
    data = b"".join(orjson.dumps({"custom_id": f"p{i}", "method": "POST", "url": "/v1/embeddings", "body": b}) + b"\n"
                    for i, b in enumerate(bodies))  # fmt: skip
    uploaded = client.files.create(file=("corpus.jsonl", io.BytesIO(data)), purpose="batch")
    assert uploaded.purpose == "batch" and uploaded.bytes == len(data)
    assert client.files.retrieve(uploaded.id).filename == "corpus.jsonl"
    assert client.files.content(uploaded.id).content == data
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h")
    batch = sdk_wait(client, batch, timeout=120)
    assert batch.status == "completed" and batch.request_counts is not None
    assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (5, 5, 0)
    assert batch.model_extra and batch.model_extra["progress"]["inputs_done"] == 6
    assert batch.output_file_id
    lines = [orjson.loads(x) for x in client.files.content(batch.output_file_id).content.splitlines()]
    assert [x["custom_id"] for x in lines] == [f"p{i}" for i in range(5)]
    online = client.embeddings.create(input=TEXTS, model=lines[0]["response"]["body"]["model"], encoding_format="float")
    for i, text in enumerate(TEXTS):
        body = lines[i]["response"]["body"]
        assert _cosine(body["data"][0]["embedding"], online.data[i].embedding) > 0.99999
        single = client.embeddings.create(input=text, model=body["model"], encoding_format="float")
        assert body["usage"] == single.usage.model_dump()
    packed = lines[4]["response"]["body"]["data"]
    assert all(isinstance(item["embedding"], str) for item in packed)  # base64 honoured
    assert client.files.delete(uploaded.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(uploaded.id)


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_node_sdk_batch_flow(server: ServerProcess) -> None:
    if not (JS_DIR / "node_modules" / "openai").exists():
        pytest.skip(f"run `npm ci --prefix {JS_DIR}` first (.ci/run does)")
    env = {**os.environ, "EMBEDSERVE_API_KEY": "any", "EMBEDSERVE_BASE_URL": f"{server.base_url}/v1"}
    out = subprocess.run(["node", "batch_flow.mjs"], cwd=JS_DIR, env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "BATCH_JS_OK" in out.stdout
