"""WordPiece tokenisation with HF ``tokenizers``: texts or caller-given token ids become exact ``Encoding``s.

Nothing is truncated unless asked: an over-long input keeps its full length so the service can name it in a 400.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tokenizers import Tokenizer

from embedserve.engine.encoding import Encoding, Token
from embedserve.errors import InvalidInputError

CHUNK_CHARS = 1 << 20


def _chunks(texts: Sequence[str], *, limit: int) -> list[list[str]]:
    chunks: list[list[str]] = [[]]
    size = 0
    for text in texts:
        if chunks[-1] and size + len(text) > limit:
            chunks.append([])
            size = 0
        chunks[-1].append(text)
        size += len(text)
    return chunks


class WordPieceTokenizer:
    def __init__(self, path: Path, *, vocab_size: int) -> None:
        self._tok = Tokenizer.from_file(str(path))
        self._tok.no_truncation()
        self._tok.no_padding()
        self.vocab_size = vocab_size
        self.cls_id = self._special("[CLS]")
        self.sep_id = self._special("[SEP]")
        self.pad_id = self._special("[PAD]")

    def _special(self, token: str) -> int:
        token_id = self._tok.token_to_id(token)
        if token_id is None:
            raise ValueError(f"the tokenizer has no {token} token")
        return int(token_id)

    def encode_texts(self, texts: Sequence[str], *, truncate: bool, max_tokens: int) -> list[Encoding]:
        # In slices of about CHUNK_CHARS characters: HF keeps ~100 bytes per character of a batch alive (offsets,
        # token strings), so this bounds the memory one call can take, however much text it is given.
        out: list[Encoding] = []
        for chunk in _chunks(texts, limit=CHUNK_CHARS):
            encoded = self._tok.encode_batch(chunk, add_special_tokens=True)
            out.extend(self._fit(tuple(e.ids), truncate=truncate, max_tokens=max_tokens) for e in encoded)
        return out

    def encode_ids(self, id_lists: Sequence[Sequence[int]], *, truncate: bool, max_tokens: int) -> list[Encoding]:
        out = []
        for index, ids in enumerate(id_lists):
            if len(ids) == 0:
                raise InvalidInputError(f"input[{index}] is an empty token list.", param="input")
            for token_id in ids:
                if not 0 <= token_id < self.vocab_size:
                    raise InvalidInputError(
                        f"input[{index}] contains token id {token_id}, outside this model's vocabulary "
                        f"(0 to {self.vocab_size - 1}); token ids must be BERT WordPiece ids.",
                        param="input",
                    )
            wrapped = ids[0] == self.cls_id and ids[-1] == self.sep_id and len(ids) >= 2
            full = tuple(ids) if wrapped else (self.cls_id, *ids, self.sep_id)
            out.append(self._fit(full, truncate=truncate, max_tokens=max_tokens))
        return out

    def tokens(self, texts: Sequence[str], *, add_special_tokens: bool, instruction: str = "") -> list[list[Token]]:
        """Each text's tokens with character offsets into that text (HF tokenizers' offsets are code points)."""
        encoded = self._tok.encode_batch([instruction + t for t in texts], add_special_tokens=add_special_tokens)
        shift = len(instruction)
        out = []
        for text, enc in zip(texts, encoded, strict=True):
            row = []
            for token_id, piece, (start, stop), special in zip(
                enc.ids, enc.tokens, enc.offsets, enc.special_tokens_mask, strict=True
            ):
                if special or stop <= shift:  # [CLS]/[SEP], or the query instruction the caller did not write
                    row.append(Token(id=token_id, text=piece, special=bool(special), start=None, stop=None))
                else:
                    first, last = start - shift, stop - shift
                    row.append(Token(id=token_id, text=text[first:last], special=False, start=first, stop=last))
            out.append(row)
        return out

    def decode(self, id_lists: Sequence[Sequence[int]], *, skip_special_tokens: bool) -> list[str]:
        """Token ids back to text; an id outside the vocabulary is a 400 naming it."""
        for index, ids in enumerate(id_lists):
            bad = next((t for t in ids if not 0 <= t < self.vocab_size), None)
            if bad is not None:
                raise InvalidInputError(
                    f"ids[{index}] contains token id {bad}, outside this model's vocabulary (0 to "
                    f"{self.vocab_size - 1}).",
                    param="ids",
                )
        return list(self._tok.decode_batch([list(ids) for ids in id_lists], skip_special_tokens=skip_special_tokens))

    def _fit(self, ids: tuple[int, ...], *, truncate: bool, max_tokens: int) -> Encoding:
        if truncate and len(ids) > max_tokens:
            return Encoding(ids=(*ids[: max_tokens - 1], self.sep_id), truncated=True)
        return Encoding(ids=ids)
