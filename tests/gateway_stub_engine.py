"""A stand-in engine for in-process gateway API tests: the real bge tokenizer (exact token counts), deterministic
unit vectors, and a failure trigger ("FAIL" in a text) to prove that failed inference refunds its reservation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

from embedserve.engine.encoding import Encoding, Token
from embedserve.engine.model_info import ModelInfo
from embedserve.engine.tokenizer import WordPieceTokenizer
from embedserve.errors import EngineError
from embedserve.settings import EngineSettings

REFERENCE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "bge-large-en-v1.5"
FAIL_TOKEN = "FAIL"


class StubEngine:
    def __init__(self, *, name: str = "BAAI/bge-large-en-v1.5") -> None:
        self.settings = EngineSettings(model=str(REFERENCE_DIR), backend="fake")
        self._tokenizer = Tokenizer.from_file(str(REFERENCE_DIR / "tokenizer.json"))
        self._fail_ids = set(self._tokenizer.encode(FAIL_TOKEN, add_special_tokens=False).ids)
        self.info = ModelInfo(
            name=name, source=str(REFERENCE_DIR), dim=1024, max_tokens=512, vocab_size=30522, pooling="cls",
            normalize=True, backend="stub", dtype="float32", device="cpu", cls_token_id=101, sep_token_id=102,
            pad_token_id=0, max_batch_tokens=4096, free_padding_tokens=512,
        )  # fmt: skip

    async def start(self) -> None:
        return None

    async def stop(self, *, timeout: float = 0) -> None:
        return None

    async def ready(self) -> bool:
        return True

    async def tokenize(self, texts: Sequence[str], *, truncate: bool) -> list[Encoding]:
        return [Encoding(ids=tuple(e.ids)) for e in self._tokenizer.encode_batch(list(texts))]

    async def tokens(self, texts: Sequence[str], *, add_special_tokens: bool, query: bool) -> list[list[Token]]:
        instruction = self.settings.query_instruction if query else ""
        tok = WordPieceTokenizer(REFERENCE_DIR / "tokenizer.json", vocab_size=30522)
        return tok.tokens(list(texts), add_special_tokens=add_special_tokens, instruction=instruction)

    async def decode(self, id_lists: Sequence[Sequence[int]], *, skip_special_tokens: bool) -> list[str]:
        tok = WordPieceTokenizer(REFERENCE_DIR / "tokenizer.json", vocab_size=30522)
        return tok.decode(id_lists, skip_special_tokens=skip_special_tokens)

    def encode_token_ids(self, id_lists: Sequence[Sequence[int]], *, truncate: bool) -> list[Encoding]:
        return [Encoding(ids=(101, *ids, 102)) for ids in id_lists]

    async def embed(self, encodings: Sequence[Encoding]) -> npt.NDArray[np.float32]:
        rows = []
        for enc in encodings:
            if self._fail_ids & set(enc.ids):
                raise EngineError("Inference failed.")
            seed = int.from_bytes(hashlib.sha256(repr(enc.ids).encode()).digest()[:8], "little")
            vec = np.random.default_rng(seed).standard_normal(1024).astype(np.float32)
            rows.append(vec / np.linalg.norm(vec))
        return np.stack(rows)
