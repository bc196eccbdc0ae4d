"""The engine builds its backend on the very thread that later runs every batch.

With OpenMP each thread that runs a parallel op keeps its own worker team; a model built on one thread and run on
another left three spinning teams' worth of threads on two cores, and one short bge-large pass took 68 instead of
46 ms (docs/internals.md, "One inference thread"). Here a recording backend notes which thread built it and which
ran it.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from embedserve.engine import engine as engine_module
from embedserve.engine.engine import Engine
from embedserve.engine.loading import LoadedModel
from embedserve.settings import EngineSettings


class ThreadRecordingBackend:
    name = "recording"
    dtype = "float32"
    device = "cpu"

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.built_on = threading.current_thread()  # the Thread object: a new thread can reuse an old one's ident
        self.ran_on: set[threading.Thread] = set()

    def forward(self, ids: npt.NDArray[np.int64], mask: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        self.ran_on.add(threading.current_thread())
        return np.full((ids.shape[0], self.dim), 1 / np.sqrt(self.dim), dtype=np.float32)

    def close(self) -> None:
        pass


def test_the_backend_is_built_on_the_inference_thread_that_runs_it(
    reference_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[ThreadRecordingBackend] = []

    def create(model: LoadedModel, settings: EngineSettings) -> ThreadRecordingBackend:
        built.append(ThreadRecordingBackend(model.config.hidden_size))
        return built[0]

    monkeypatch.setattr(engine_module, "create_backend", create)
    engine = Engine(EngineSettings(model=str(reference_model_dir), load_format="dummy"))
    vectors = engine.embed_texts(["Laura is a DJ.", "What does Laura do?"])

    assert vectors.shape == (2, 1024)
    backend = built[0]
    assert backend.built_on.name.startswith("embedserve-inference")
    assert backend.ran_on == {backend.built_on}  # the very thread, not just one of the same name

    engine.embed_texts(["Each call starts and stops the engine."])  # a restart keeps the model's thread
    assert len(built) == 1 and backend.ran_on == {backend.built_on}
