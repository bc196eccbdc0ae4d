"""What the tokenizer side hands out: one tokenised input (``Encoding``) and one token as ``/tokenize`` shows it."""

from __future__ import annotations

from dataclasses import dataclass


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
