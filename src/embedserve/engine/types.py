"""Values that cross the engine's boundary: what a model is, and one tokenised input."""

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


@dataclass(frozen=True, slots=True)
class Encoding:
    """One input's token ids, [CLS] and [SEP] included; ``len(ids)`` is its exact token count."""

    ids: tuple[int, ...]
    truncated: bool = False

    @property
    def length(self) -> int:
        return len(self.ids)


@dataclass(frozen=True, slots=True)
class Token:
    """One token of a text as ``/tokenize`` shows it. ``start``/``stop`` are character (code point) offsets into the
    caller's text, so ``text == input[start:stop]``; None for special tokens and the query instruction's tokens."""

    id: int
    text: str
    special: bool
    start: int | None
    stop: int | None
