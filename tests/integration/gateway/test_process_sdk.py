"""A live server on an empty store: it prints its first key once, and the official SDK works with that key."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, cast

import httpx
import openai
import pytest

from tests.integration.gateway.processes import create_key, start_server
from tests.serverproc import free_port

MODEL = "BAAI/bge-large-en-v1.5"


def test_first_key_is_printed_once_and_the_sdk_uses_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {"EMBEDSERVE_DATA_DIR": str(data)}
    port = free_port()
    server = start_server(port=port, env=env, log_path=tmp_path / "first.log")
    try:
        log = server.log()
        found = re.search(r"^\s+(es-[A-Za-z0-9_-]{43})\s*$", log, re.M)
        admin = re.search(r"^\s+(es-admin-[A-Za-z0-9_-]{43})\s*$", log, re.M)
        assert found and admin and "embedserve keys create" in log
        with openai.OpenAI(api_key=found.group(1), base_url=f"{server.url}/v1") as client:
            response = client.embeddings.create(input="Laura is a DJ.", model=MODEL)
        assert response.usage.prompt_tokens == 7
        assert response.model_extra is not None and response.model_extra["meta"]["usage"]["credits_used"] == 1
        keys = httpx.get(f"{server.url}/admin/keys", headers={"Authorization": f"Bearer {admin.group(1)}"})
        assert keys.status_code == 200 and [k["name"] for k in keys.json()["data"]] == ["default", "admin"]

        poor = create_key(["--data-dir", str(data)], credits=0)
        sent: list[str] = []
        http = httpx.Client(event_hooks={"request": [lambda request: sent.append(request.url.path)]})
        with (
            openai.OpenAI(api_key=poor["secret"], base_url=f"{server.url}/v1", http_client=cast(Any, http)) as sdk,
            pytest.raises(openai.APIStatusError, match="costs 1 credit ") as info,
        ):
            sdk.embeddings.create(input="Laura is a DJ.", model=MODEL)
        assert info.value.status_code == 402 and len(sent) == 1
    finally:
        server.stop()
    again = start_server(port=port, env=env, log_path=tmp_path / "second.log")
    again.stop()
    assert "es-" not in again.log()
