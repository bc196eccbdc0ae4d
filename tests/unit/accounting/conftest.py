"""Unit fixtures: a gateway over a throwaway SQLite file, an injected clock, the same clock for ``limits``."""

from __future__ import annotations

import types
from collections.abc import AsyncIterator
from pathlib import Path

import limits.aio.storage.memory
import limits.aio.strategies
import pytest

from embedserve.accounting.store_gateway import StoreGateway
from tests.gateway_support import make_gateway


class FakeClock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """One clock for the gateway and for ``limits`` (which reads ``time.time()`` in its own modules)."""
    fake = FakeClock()
    shim = types.SimpleNamespace(time=fake)
    monkeypatch.setattr(limits.aio.storage.memory, "time", shim)
    monkeypatch.setattr(limits.aio.strategies, "time", shim)
    return fake


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'embedserve.db'}"


@pytest.fixture
def announced() -> list[str]:
    return []


@pytest.fixture
async def gateway(sqlite_url: str, clock: FakeClock, announced: list[str]) -> AsyncIterator[StoreGateway]:
    gw = make_gateway(sqlite_url, clock=clock, announced=announced)
    await gw.start()
    yield gw
    await gw.stop()
