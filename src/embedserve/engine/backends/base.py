"""The interface every inference backend implements, and the registry that builds one by name."""

from __future__ import annotations

from collections.abc import Callable
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


BackendFactory = Callable[["LoadedModel", "EngineSettings"], Backend]
