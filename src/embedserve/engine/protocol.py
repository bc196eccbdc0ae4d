"""``EmbeddingEngine``: what the service and the API use of an engine. ``Engine`` is the one implementation; tests
run it on the fake backend."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from embedserve.engine.encoding import Encoding, Token
from embedserve.engine.inputs import Encoded, Items
from embedserve.engine.model_info import ModelInfo
from embedserve.engine.scheduler import EmbedTiming, Priority
from embedserve.settings import EngineSettings


class EmbeddingEngine(Protocol):
    @property
    def info(self) -> ModelInfo:
        """The loaded model; valid once ``start`` has run."""
        ...

    @property
    def settings(self) -> EngineSettings: ...

    @property
    def queue_depth(self) -> int: ...

    @property
    def queued_tokens(self) -> int: ...

    async def start(self) -> None: ...

    async def stop(self, *, timeout: float | None = None) -> None: ...

    async def ready(self) -> bool:
        """A tiny forward pass succeeds (``/health``)."""
        ...

    async def encode(self, items: Items, *, query: bool, truncate: bool) -> Encoded:
        """A request's texts or token-id arrays as the model's encodings, each within its context."""
        ...

    async def tokens(self, texts: Sequence[str], *, add_special_tokens: bool, query: bool) -> list[list[Token]]:
        """``/tokenize``: each text's tokens with character offsets."""
        ...

    async def decode(self, id_lists: Sequence[Sequence[int]], *, skip_special_tokens: bool) -> list[str]:
        """``/decode``: the model's token ids back to text."""
        ...

    async def embed(
        self, encodings: Sequence[Encoding], *, priority: Priority = ..., timing: EmbedTiming | None = ...
    ) -> npt.NDArray[np.float32]:
        """``(n, dim)`` float32 rows in input order; ``timing``, if given, filled with where the time went."""
        ...
