"""The interface every inference backend implements, and the registry that builds one by name."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from embedserve.engine.loading import LoadedModel
    from embedserve.settings import EngineSettings


class Backend(Protocol):
    """Runs one padded batch: token ids and mask in, pooled (and, if the model says so, normalised) rows out.

    ``forward`` is called from the engine's single inference thread, never concurrently.
    """

    name: str
    dtype: str
    device: str

    def forward(
        self, input_ids: npt.NDArray[np.int64], attention_mask: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.float32]:
        """``(batch, seq)`` int64 ids and mask -> ``(batch, dim)`` float32 embeddings."""
        ...

    def close(self) -> None: ...


class SteppedBackend(Backend, Protocol):
    """A backend that can also run a pass in steps (one encoder layer each), so the scheduler can pause a batch
    job's pass between layers when online work arrives (the torch backend)."""

    def forward_steps(
        self, input_ids: npt.NDArray[np.int64], attention_mask: npt.NDArray[np.int64]
    ) -> Generator[None, None, npt.NDArray[np.float32]]:
        """``forward``'s result as a generator's return value, with a yield between layers."""
        ...


BackendFactory = Callable[["LoadedModel", "EngineSettings"], Backend]
