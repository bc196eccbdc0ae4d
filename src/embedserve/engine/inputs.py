"""What a request's inputs become for the model: texts or token-id arrays in, exact ``Encoding``s out.

Reading token-id arrays (the model's WordPiece ids or OpenAI's cl100k ids, see ``token_ids``), the query instruction
prefix, [CLS]/[SEP] framing and the one context-length check all live here, so a caller encodes once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from embedserve.engine.encoding import Encoding
from embedserve.engine.token_ids import TokenIdKind, classify, decode_cl100k
from embedserve.engine.tokenizer import WordPieceTokenizer
from embedserve.errors import ContextLengthExceededError
from embedserve.settings import EngineSettings

Items = list[str] | list[list[int]]


@dataclass(frozen=True, slots=True)
class Encoded:
    """A request's inputs in order, each within the model's context."""

    encodings: tuple[Encoding, ...]
    token_ids: tuple[TokenIdKind, ...] = ()  # how each token-id array was read; empty for text input


class InputEncoder:
    def __init__(self, tokenizer: WordPieceTokenizer, settings: EngineSettings, *, max_tokens: int) -> None:
        self._tok = tokenizer
        self._settings = settings
        self._max_tokens = max_tokens
        self._instruction_ids: tuple[int, ...] | None = None

    async def encode(self, items: Items, *, query: bool, truncate: bool) -> Encoded:
        """Texts, or token-id arrays, as the model's encodings; an input over the context is a 400 naming it."""
        if items and isinstance(items[0], str):
            encoded = Encoded(tuple(await self._texts([str(t) for t in items], query=query, truncate=truncate)))
        else:
            encoded = await self._id_lists([[int(t) for t in ids] for ids in items], query=query, truncate=truncate)
        check_context(encoded.encodings, limit=self._max_tokens)
        return encoded

    async def tokenize(self, texts: Sequence[str], *, truncate: bool) -> list[Encoding]:
        """Tokenise off the event loop (HF tokenizers releases the GIL and uses its own threads); nothing refused."""
        return await asyncio.to_thread(
            self._tok.encode_texts, list(texts), truncate=truncate, max_tokens=self._max_tokens
        )

    def encode_token_ids(self, ids: Sequence[Sequence[int]], *, truncate: bool) -> list[Encoding]:
        return self._tok.encode_ids(ids, truncate=truncate, max_tokens=self._max_tokens)

    async def _texts(self, texts: list[str], *, query: bool, truncate: bool) -> list[Encoding]:
        if query:
            texts = [self._settings.query_instruction + t for t in texts]
        return await self.tokenize(texts, truncate=truncate)

    async def _id_lists(self, id_lists: list[list[int]], *, query: bool, truncate: bool) -> Encoded:
        tok, mode = self._tok, self._settings.token_ids
        kinds = tuple(
            classify(ids, index=i, mode=mode, cls_id=tok.cls_id, sep_id=tok.sep_id) for i, ids in enumerate(id_lists)
        )
        out: list[Encoding | None] = [None] * len(id_lists)
        cl100k_at = [i for i, kind in enumerate(kinds) if kind == "tiktoken"]
        if cl100k_at:  # OpenAI-style ids: decode to text, then tokenise that text for the model
            texts = await asyncio.to_thread(decode_cl100k, [id_lists[i] for i in cl100k_at], indexes=cl100k_at)
            for i, enc in zip(cl100k_at, await self._texts(texts, query=query, truncate=truncate), strict=True):
                out[i] = enc
        wordpiece_at = [i for i, kind in enumerate(kinds) if kind == "wordpiece"]
        if wordpiece_at:
            prefix = list(await self._query_prefix_ids()) if query else []
            wordpiece = [self._with_prefix(id_lists[i], prefix) for i in wordpiece_at]
            for i, enc in zip(wordpiece_at, self.encode_token_ids(wordpiece, truncate=truncate), strict=True):
                out[i] = enc
        return Encoded(tuple(enc for enc in out if enc is not None), kinds)

    def _with_prefix(self, ids: list[int], prefix: list[int]) -> list[int]:
        """The query instruction's ids after [CLS] when the caller framed the array, else in front of it."""
        if ids and ids[0] == self._tok.cls_id:
            return [ids[0], *prefix, *ids[1:]]
        return [*prefix, *ids]

    async def _query_prefix_ids(self) -> tuple[int, ...]:
        if self._instruction_ids is None:
            instruction = self._settings.query_instruction.strip()
            (enc,) = await self.tokenize([instruction], truncate=False)
            self._instruction_ids = enc.ids[1:-1]
        return self._instruction_ids


def check_context(encodings: Sequence[Encoding], *, limit: int) -> None:
    """The context-length check: an input longer than ``limit`` tokens is refused, naming it."""
    for i, enc in enumerate(encodings):
        if enc.length > limit:
            raise ContextLengthExceededError(
                f"input[{i}] has {enc.length} tokens, more than the model's limit of {limit} tokens "
                '(counting [CLS] and [SEP]). Shorten it, or send "truncate": true to have it truncated.',
                param="input",
            )
