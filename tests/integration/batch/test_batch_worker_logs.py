"""A store outage costs the batch worker one warning, not a traceback per poll."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from embedserve.errors import StoreUnavailableError


async def test_a_store_outage_is_one_warning_without_a_traceback(
    auth_app: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    worker = auth_app.state.batches.worker
    claims = 0

    async def unavailable(**_: Any) -> None:
        nonlocal claims
        claims += 1
        raise StoreUnavailableError("The accounting database is unavailable.")

    monkeypatch.setattr(worker.driver.jobs, "claim", unavailable)
    with caplog.at_level(logging.INFO, logger="embedserve.batch"):
        while claims < 6:
            worker.wake()
            await asyncio.sleep(0.02)
    records = [r for r in caplog.records if r.name.startswith("embedserve.batch")]
    assert [r.levelno for r in records] == [logging.WARNING]
    assert all(r.exc_info is None for r in records)
