"""Big lines: one over the online body limit fails validation by name; lines are read and parsed off the event loop,
and a big body is validated in a body worker process (pydantic holds the GIL: 1.6 s for 3M token ids)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from embedserve.api import batch_codec
from embedserve.api.batch_codec import EmbeddingsCodec
from embedserve.api.bodies import parse_request
from embedserve.batch import chunks, validate
from embedserve.batch.lines import parse_line
from tests.integration.batch.conftest import CREATE, finished, jsonl, request_line, upload, wait_for


async def _run(client: httpx.AsyncClient, lines: list[dict[str, Any]]) -> dict[str, Any]:
    source = await upload(client, jsonl(lines))
    created = await client.post("/v1/batches", json={"input_file_id": source["id"], **CREATE})
    return await wait_for(client, created.json()["id"], until=finished)


async def test_a_line_over_the_body_limit_fails_validation_naming_the_line(
    make_client: Callable[..., Any], tmp_path: Path
) -> None:
    client = await make_client(data_dir=tmp_path, batch_poll_seconds=0.05, max_body_bytes=1024)
    batch = await _run(client, [request_line("a", {"input": "short"}), request_line("b", {"input": "x " * 1000})])
    assert batch["status"] == "failed"
    [error] = batch["errors"]["data"]
    assert (error["code"], error["line"], error["param"]) == ("line_too_large", 2, "body")
    assert "1024 bytes" in error["message"]


async def test_lines_are_read_and_parsed_off_the_event_loop(
    bclient: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_loop: list[str] = []

    def watch(name: str, parse: Callable[..., Any]) -> Callable[..., Any]:
        def watched(*args: Any, **kwargs: Any) -> Any:
            if threading.current_thread() is threading.main_thread():
                on_loop.append(name)
            return parse(*args, **kwargs)

        return watched

    monkeypatch.setattr(validate, "parse_line", watch("validate", parse_line))
    monkeypatch.setattr(chunks, "parse_line", watch("run", parse_line))  # the runner and a job's end
    codec_parse, in_process = EmbeddingsCodec.parse, []

    def big_body_parse(self: EmbeddingsCodec, body: Mapping[str, Any], *, request_id: str) -> Any:
        if len(body["input"]) > 10_000:
            in_process.append("codec")
        return codec_parse(self, body, request_id=request_id)

    def fallback(body: bytes) -> Any:
        in_process.append("thread")
        return parse_request(body)

    monkeypatch.setattr(EmbeddingsCodec, "parse", big_body_parse)
    monkeypatch.setattr(batch_codec, "parse_request", fallback, raising=False)
    lines = [request_line(f"r{i}", {"input": f"line {i}"}) for i in range(9)]
    lines.append(request_line("big", {"input": [1000] * 20_000}))  # ~100 KB of token ids
    batch = await _run(bclient, lines)
    assert batch["status"] == "completed" and batch["request_counts"]["total"] == 10
    assert on_loop == []
    assert in_process == []  # the big body was validated by a body worker process, as a big request's is
