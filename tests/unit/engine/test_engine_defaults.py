"""What the engine resolves ``auto`` batching settings to for the device its backend runs on."""

from __future__ import annotations

import asyncio
import threading
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


class GatedBackend(DeviceBackend):
    """Holds each pass until ``gate`` is set; records each pass's size."""

    def __init__(self, device: str) -> None:
        super().__init__(device)
        self.gate = threading.Event()
        self.passes: list[int] = []

    def forward(self, ids: npt.NDArray[np.int64], mask: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        self.passes.append(ids.shape[0])
        self.gate.wait(timeout=10)
        return super().forward(ids, mask)


def burst_passes(settings: EngineSettings, device: str) -> list[int]:
    """Passes for a burst of one-text requests on an idle engine: one arrives and starts a pass, ten more arrive
    one by one while it runs."""
    backend = GatedBackend(device)
    engine = Engine(settings, backend=backend)

    async def go() -> list[int]:
        backend.gate.set()
        await engine.start()  # its warm-up pass
        backend.gate.clear()
        backend.passes.clear()
        first = asyncio.ensure_future(engine.embed(engine.encode_token_ids([[101, 7, 102]], truncate=False)))
        while not backend.passes:
            await asyncio.sleep(0.001)
        rest = []
        for i in range(10):
            call = engine.embed(engine.encode_token_ids([[101, 8 + i, 102]], truncate=False))
            rest.append(asyncio.ensure_future(call))
            await asyncio.sleep(0.005)  # the scheduler sees each arrival on its own
        backend.gate.set()
        await asyncio.gather(first, *rest)
        await engine.stop()
        return backend.passes

    return asyncio.run(go())


@pytest.mark.parametrize(("device", "passes"), [("cpu", [1, 10]), ("cuda:0", [1, 1, 9])])
def test_on_a_cpu_the_next_batch_is_formed_when_the_running_pass_ends(
    reference_model_dir: Path, device: str, passes: list[int]
) -> None:
    """On a CPU a burst rides one full pass after the first; on a GPU the next batch is prepared at once (here from
    the one input that had arrived), so its passes follow without a gap."""
    assert burst_passes(EngineSettings(model=str(reference_model_dir), load_format="dummy"), device) == passes


def test_an_operator_can_set_the_batches_in_flight(reference_model_dir: Path) -> None:
    settings = EngineSettings(model=str(reference_model_dir), load_format="dummy", batches_in_flight=2)
    assert burst_passes(settings, "cpu") == [1, 1, 9]
