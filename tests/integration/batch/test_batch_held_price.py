"""A job's lines are charged the price its credits were held at, and a part never costs more than the hold has."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import httpx
import pytest

from embedserve.accounting.holds import hold_in, settle_part_in
from embedserve.batch.failures import RetryPolicy
from tests.integration.batch.conftest import CREATE, bearer, finished, jsonl, request_line, wait_for

TEXTS = ["Laura is a DJ.", "A second passage.", "Third.", "Fourth line here.", "Fifth and last."]


async def test_lines_are_charged_the_price_held_at_validation_after_the_price_changed(
    auth_app: Any, http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = auth_app.state.batches.worker.driver
    driver.config = dataclasses.replace(driver.config, retry=RetryPolicy(max_attempts=2, base_s=0.05))
    run = driver._run

    async def after_a_restart_at_ten_times_the_price(job: Any) -> Any:
        monkeypatch.setattr(driver.lines, "price", lambda tokens: 10 * (1 if tokens else 0))
        return await run(job)

    monkeypatch.setattr(driver, "_run", after_a_restart_at_ten_times_the_price)
    created = await auth_app.state.gateway.keys.create(name="batch-user", credits=100)
    secret = created.secret
    content = jsonl([request_line(f"r{i}", {"input": t}) for i, t in enumerate(TEXTS)])
    upload = await http.post(
        "/v1/files", files={"file": ("in.jsonl", content)}, data={"purpose": "batch"}, headers=bearer(secret)
    )
    batch_id = (await http.post("/v1/batches", json={"input_file_id": upload.json()["id"], **CREATE},
                                headers=bearer(secret))).json()["id"]  # fmt: skip
    batch = await wait_for(http, batch_id, until=finished, headers=bearer(secret))
    assert batch["status"] == "completed", batch["errors"]
    assert batch["progress"]["credits_total"] == batch["progress"]["credits_used"] == 5
    assert (await auth_app.state.gateway.keys.get(created.info.id)).credits == 100 - 5


async def test_a_part_costing_more_than_the_hold_has_left_is_charged_what_is_left(auth_app: Any) -> None:
    created = await auth_app.state.gateway.keys.create(name="batch-user", credits=100)
    store = auth_app.state.batches.store
    async with store.begin() as conn:
        hold = await hold_in(conn, key_id=created.info.id, request_id="batch_x", model="m", inputs=3, tokens=30,
                             credits=3, at=time.time())  # fmt: skip
    async with store.begin() as conn:
        charged = await settle_part_in(
            conn, hold, request_id="batch_x#0", inputs=5, tokens=50, credits=5, at=time.time()
        )
    assert charged == 3
    assert (await auth_app.state.gateway.keys.get(created.info.id)).credits == 100 - 3
