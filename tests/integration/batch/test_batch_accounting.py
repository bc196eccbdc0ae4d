"""Keys and credits on files and batches: ownership (404 for another key, admin sees all) and the credit hold."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from tests.integration.batch.conftest import ADMIN, CREATE, bearer, finished, jsonl, request_line, wait_for

TEXTS = ["Laura is a DJ.", "A second passage for the batch.", "Third.", "Fourth line here.", "Fifth and last."]


async def _key(app: Any, **options: Any) -> tuple[str, str]:
    created = await app.state.gateway.keys.create(name="batch-user", **options)
    return created.info.id, created.secret


async def _upload(http: httpx.AsyncClient, secret: str, lines: list[dict[str, Any]]) -> dict[str, Any]:
    response = await http.post(
        "/v1/files", files={"file": ("in.jsonl", jsonl(lines))}, data={"purpose": "batch"}, headers=bearer(secret)
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def test_another_key_gets_404_and_the_admin_sees_all(auth_app: Any, http: httpx.AsyncClient) -> None:
    _, alice = await _key(auth_app)
    _, bob = await _key(auth_app)
    source = await _upload(http, alice, [request_line("a", {"input": "x"})])
    batch = await http.post("/v1/batches", json={"input_file_id": source["id"], **CREATE}, headers=bearer(alice))
    batch_id = batch.json()["id"]
    for method, path in (("GET", f"/v1/files/{source['id']}"), ("GET", f"/v1/files/{source['id']}/content"),
                         ("DELETE", f"/v1/files/{source['id']}"), ("GET", f"/v1/batches/{batch_id}"),
                         ("POST", f"/v1/batches/{batch_id}/cancel")):  # fmt: skip
        response = await http.request(method, path, headers=bearer(bob))
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error"]["code"] == "not_found"
    stolen = await http.post("/v1/batches", json={"input_file_id": source["id"], **CREATE}, headers=bearer(bob))
    assert stolen.status_code == 404
    assert (await http.get("/v1/files", headers=bearer(bob))).json()["data"] == []
    assert (await http.get("/v1/batches", headers=bearer(bob))).json()["data"] == []
    assert source["id"] in [f["id"] for f in (await http.get("/v1/files", headers=bearer(alice))).json()["data"]]
    admin_files = (await http.get("/v1/files", headers=bearer(ADMIN))).json()["data"]
    assert source["id"] in [f["id"] for f in admin_files]
    assert (await http.get(f"/v1/batches/{batch_id}", headers=bearer(ADMIN))).status_code == 200
    assert (await http.get("/v1/files", headers=bearer("es-" + "x" * 43))).status_code == 401


async def test_credits_are_held_then_charged_exactly(auth_app: Any, http: httpx.AsyncClient) -> None:
    key_id, secret = await _key(auth_app, credits=100)
    lines = [request_line(f"r{i}", {"input": t}) for i, t in enumerate(TEXTS)]
    lines.append(request_line("bad", {"input": "x", "dimensions": 7}))
    source = await _upload(http, secret, lines)
    created = await http.post("/v1/batches", json={"input_file_id": source["id"], **CREATE}, headers=bearer(secret))
    batch = await wait_for(http, created.json()["id"], until=finished, headers=bearer(secret))
    assert batch["status"] == "completed" and batch["request_counts"] == {"total": 6, "completed": 5, "failed": 1}
    # Each line is priced as the same /v1/embeddings request would be: 1 credit per started 1,000 tokens.
    out = (await http.get(f"/v1/files/{batch['output_file_id']}/content", headers=bearer(secret))).content
    used = sum(orjson.loads(line)["response"]["body"]["meta"]["usage"]["credits_used"] for line in out.splitlines())
    assert used == 5 == batch["progress"]["credits_used"]
    info = await auth_app.state.gateway.keys.get(key_id)
    assert info.credits == 100 - used


async def test_a_batch_beyond_the_balance_fails_before_any_work(auth_app: Any, http: httpx.AsyncClient) -> None:
    key_id, secret = await _key(auth_app, credits=3)
    source = await _upload(http, secret, [request_line(f"r{i}", {"input": t}) for i, t in enumerate(TEXTS)])
    created = await http.post("/v1/batches", json={"input_file_id": source["id"], **CREATE}, headers=bearer(secret))
    batch = await wait_for(http, created.json()["id"], until=finished, headers=bearer(secret))
    assert batch["status"] == "failed" and batch["output_file_id"] is None
    assert batch["errors"]["data"][0]["code"] == "insufficient_quota"
    assert batch["request_counts"]["completed"] == 0
    assert (await auth_app.state.gateway.keys.get(key_id)).credits == 3
