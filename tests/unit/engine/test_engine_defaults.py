"""What the engine resolves ``auto`` batching settings to for the device its backend runs on."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from embedserve.engine.engine import Engine
from embedserve.settings import EngineSettings


class DeviceBackend:
    """Unit vectors from a backend that says it runs on ``device`` (no model)."""

    name = "device"
    dtype = "float16"

    def __init__(self, device: str) -> None:
        self.device = device

    def forward(self, ids: npt.NDArray[np.int64], mask: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        return np.full((ids.shape[0], 1024), 1 / 32, dtype=np.float32)

    def close(self) -> None:
        pass


def started(settings: EngineSettings, device: str) -> Engine:
    engine = Engine(settings, backend=DeviceBackend(device))

    async def go() -> None:
        await engine.start()
        await engine.stop()

    asyncio.run(go())
    return engine


@pytest.mark.parametrize(("device", "budget", "free"), [("cpu", 2048, 512), ("cuda:0", 16384, 4096)])
def test_batch_budget_and_free_padding_follow_the_device(
    reference_model_dir: Path, device: str, budget: int, free: int
) -> None:
    info = started(EngineSettings(model=str(reference_model_dir), load_format="dummy"), device).info
    assert (info.max_batch_tokens, info.free_padding_tokens) == (budget, free)


def test_an_operator_can_set_the_free_padding_size(reference_model_dir: Path) -> None:
    settings = EngineSettings(model=str(reference_model_dir), load_format="dummy", free_padding_tokens=1024)
    assert started(settings, "cuda:0").info.free_padding_tokens == 1024
