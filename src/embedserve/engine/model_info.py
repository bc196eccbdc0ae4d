"""What a loaded model is: its pooling mode and the facts about it callers (service, API, benchmarks) rely on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Pooling = Literal["cls", "mean"]


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """Facts about the loaded model that callers (service, API, benchmarks) rely on."""

    name: str  # the served model name clients send and see
    source: str  # the directory or hub id it was loaded from
    dim: int
    max_tokens: int  # context length including [CLS] and [SEP]
    vocab_size: int
    pooling: Pooling
    normalize: bool
    backend: str
    dtype: str
    device: str
    cls_token_id: int
    sep_token_id: int
    pad_token_id: int
    max_batch_tokens: int  # the padded-token budget per forward pass in effect (auto resolved by device)
    free_padding_tokens: int  # below this padded size a batch may pad freely (auto resolved by device)
    random_weights: bool = False  # seeded random weights (--load-format dummy, fake backend): meaningless vectors
