"""A job's disk work (fsync of each part, removing its folder, deleting a file) runs off the event loop."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.batch.conftest import CREATE, finished, jsonl, request_line, upload, wait_for


async def test_parts_are_fsynced_and_files_removed_off_the_event_loop(
    bclient: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_loop: list[str] = []

    def watch(name: str, call: Callable[..., Any]) -> Callable[..., Any]:
        def watched(*args: Any, **kwargs: Any) -> Any:
            if threading.current_thread() is threading.main_thread():
                on_loop.append(name)
            return call(*args, **kwargs)

        return watched

    monkeypatch.setattr(os, "fsync", watch("fsync", os.fsync))
    monkeypatch.setattr(Path, "unlink", watch("unlink", Path.unlink))
    monkeypatch.setattr(Path, "rmdir", watch("rmdir", Path.rmdir))
    source = await upload(bclient, jsonl(request_line(f"r{i}", {"input": f"line {i}"}) for i in range(9)))
    created = await bclient.post("/v1/batches", json={"input_file_id": source["id"], **CREATE})
    batch = await wait_for(bclient, created.json()["id"], until=finished)
    assert batch["status"] == "completed" and batch["request_counts"]["completed"] == 9
    assert (await bclient.delete(f"/v1/files/{source['id']}")).status_code == 200
    assert on_loop == []
