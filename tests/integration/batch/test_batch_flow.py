"""Files and Batches API end to end in-process: upload, create, poll, download; results equal /v1/embeddings."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from tests.integration.batch.conftest import CREATE, finished, jsonl, request_line, upload, wait_for


async def test_batch_results_equal_embeddings_responses(bclient: httpx.AsyncClient) -> None:
    bodies = [{"input": f"passage number {i} about bulk jobs"} for i in range(9)] + [
        {"input": ["two", "inputs here"], "encoding_format": "base64"}
    ]
    lines = [request_line(f"r{i}", body) for i, body in enumerate(bodies)]
    source = await upload(bclient, jsonl(lines))
    created = await bclient.post(
        "/v1/batches", json={"input_file_id": source["id"], "endpoint": "/v1/embeddings", "completion_window": "24h"}
    )
    assert created.status_code == 200, created.text
    assert created.json()["status"] == "validating"
    batch = await wait_for(bclient, created.json()["id"], until=finished)
    assert batch["status"] == "completed", batch
    assert batch["request_counts"] == {"total": 10, "completed": 10, "failed": 0}
    assert batch["error_file_id"] is None
    content = await bclient.get(f"/v1/files/{batch['output_file_id']}/content")
    out = [orjson.loads(line) for line in content.content.splitlines()]
    assert [o["custom_id"] for o in out] == [f"r{i}" for i in range(10)]
    late = await bclient.post(f"/v1/batches/{batch['id']}/cancel")
    assert late.status_code == 400 and "completed" in late.json()["error"]["message"]
    for line, body in zip(out, bodies, strict=True):
        assert line["response"]["status_code"] == 200 and line["error"] is None
        online = (await bclient.post("/v1/embeddings", json=body)).json()
        got = line["response"]["body"]
        assert got["data"] == online["data"] and got["usage"] == online["usage"] and got["meta"] == online["meta"]
    tokens = sum(o["response"]["body"]["usage"]["prompt_tokens"] for o in out)
    assert batch["progress"]["tokens_done"] == batch["progress"]["tokens_total"] == tokens
    assert batch["progress"]["inputs_done"] == 11


async def test_bad_line_goes_to_error_file_with_the_request_envelope(bclient: httpx.AsyncClient) -> None:
    bodies: list[dict[str, Any]] = [
        {"input": "fine"},
        {"input": "x", "model": "no-such-model"},
        {"input": []},
        {"input": "also fine"},
    ]
    source = await upload(bclient, jsonl(request_line(f"c{i}", b) for i, b in enumerate(bodies)))
    created = await bclient.post(
        "/v1/batches", json={"input_file_id": source["id"], "endpoint": "/v1/embeddings", "completion_window": "24h"}
    )
    batch = await wait_for(bclient, created.json()["id"], until=finished)
    assert batch["status"] == "completed"
    assert batch["request_counts"] == {"total": 4, "completed": 2, "failed": 2}
    errors = (await bclient.get(f"/v1/files/{batch['error_file_id']}/content")).content.splitlines()
    by_id = {line["custom_id"]: line for line in map(orjson.loads, errors)}
    assert set(by_id) == {"c1", "c2"}
    for custom_id, body in (("c1", bodies[1]), ("c2", bodies[2])):
        online = await bclient.post("/v1/embeddings", json=body)
        assert by_id[custom_id]["response"]["status_code"] == online.status_code
        assert by_id[custom_id]["response"]["body"] == online.json()
    outputs = (await bclient.get(f"/v1/files/{batch['output_file_id']}/content")).content.splitlines()
    assert [orjson.loads(line)["custom_id"] for line in outputs] == ["c0", "c3"]


async def test_cancel_mid_run_keeps_what_ran_and_stops_the_rest(bclient: httpx.AsyncClient) -> None:
    lines = [request_line(f"r{i}", {"input": f"line {i} " * 20}) for i in range(400)]
    source = await upload(bclient, jsonl(lines))
    created = await bclient.post("/v1/batches", json={"input_file_id": source["id"], **CREATE})
    batch_id = created.json()["id"]
    await wait_for(bclient, batch_id, until=lambda b: b["request_counts"]["completed"] >= 8)
    cancelling = await bclient.post(f"/v1/batches/{batch_id}/cancel")
    assert cancelling.status_code == 200 and cancelling.json()["status"] in ("cancelling", "cancelled")
    batch = await wait_for(bclient, batch_id, until=finished)
    assert batch["status"] == "cancelled" and batch["cancelled_at"] and batch["cancelling_at"]
    done = batch["request_counts"]["completed"]
    assert 8 <= done < 400 and batch["request_counts"]["failed"] == 400 - done  # the lines not run, named
    out = (await bclient.get(f"/v1/files/{batch['output_file_id']}/content")).content.splitlines()
    ids = [orjson.loads(line)["custom_id"] for line in out]
    assert ids == [f"r{i}" for i in range(done)]  # in order, each once
    not_run = (await bclient.get(f"/v1/files/{batch['error_file_id']}/content")).content.splitlines()
    err = [orjson.loads(x) for x in not_run]
    assert [x["custom_id"] for x in err] == [f"r{i}" for i in range(done, 400)]
    assert {x["error"]["code"] for x in err} == {"batch_cancelled"}
    again = await bclient.post(f"/v1/batches/{batch_id}/cancel")
    assert again.status_code == 200 and again.json()["status"] == "cancelled"


async def test_list_pages_with_after_and_limit(bclient: httpx.AsyncClient) -> None:
    source = await upload(bclient, jsonl([request_line("a", {"input": "x"})]))
    made = [(await bclient.post("/v1/batches", json={"input_file_id": source["id"], **CREATE})).json()["id"]
            for _ in range(3)]  # fmt: skip
    first = (await bclient.get("/v1/batches", params={"limit": 2})).json()
    assert [b["id"] for b in first["data"]] == made[::-1][:2] and first["has_more"] is True
    rest = (await bclient.get("/v1/batches", params={"limit": 2, "after": first["last_id"]})).json()
    assert [b["id"] for b in rest["data"]] == [made[0]] and rest["has_more"] is False
