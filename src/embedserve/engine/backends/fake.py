"""A deterministic fake backend for API tests only: a unit vector seeded by each input's token ids.

Same ids give the same vector, different ids a different one; no model weights, no torch. Built with ``fail_on``
token ids, a batch holding any of them fails, as a broken forward pass would (tests of refunds and error paths).
"""

from __future__ import annotations

import hashlib

import numpy as np
import numpy.typing as npt

from embedserve.engine.loading import LoadedModel
from embedserve.settings import EngineSettings


class FakeBackend:
    name = "fake"
    dtype = "float32"
    device = "cpu"

    def __init__(self, *, dim: int, fail_on: frozenset[int] = frozenset()) -> None:
        self.dim = dim
        self.fail_on = fail_on

    def forward(
        self, input_ids: npt.NDArray[np.int64], attention_mask: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.float32]:
        rows = []
        for ids, mask in zip(input_ids, attention_mask, strict=True):
            kept = ids[mask.astype(bool)].astype(np.int64)
            if self.fail_on.intersection(kept.tolist()):
                raise RuntimeError("the fake backend was asked to fail on one of these token ids")
            real = kept.tobytes()
            seed = int.from_bytes(hashlib.sha256(real).digest()[:8], "little")
            vec = np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
            rows.append(vec / np.linalg.norm(vec))
        return np.stack(rows).astype(np.float32)

    def close(self) -> None:
        return None


def create_fake(model: LoadedModel, settings: EngineSettings) -> FakeBackend:
    return FakeBackend(dim=model.config.hidden_size)
