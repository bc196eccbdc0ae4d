"""What a token-id array in ``input`` means: the model's own WordPiece ids, or OpenAI's ``cl100k_base`` ids.

OpenAI defines token arrays as tiktoken tokens, and the clients that send them (LangChain's default) mean cl100k.
``auto`` reads an array framed ``[CLS] … [SEP]`` with the model's ids as WordPiece and any other array as cl100k ids,
which are decoded to text and tokenised for the model. The rule is unambiguous for BERT vocabularies: their [CLS]
is 101, and cl100k's token 101 is the lone byte 0xA8, a UTF-8 continuation byte that cannot open any text, so no
cl100k encoding of a text starts with it.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import tiktoken

from embedserve.errors import InvalidInputError, ModelLoadError
from embedserve.settings import TokenIdMode

TokenIdKind = Literal["wordpiece", "tiktoken"]

CL100K_FILE = Path(__file__).with_name("data") / "cl100k_base.tiktoken"
# The hash tiktoken itself publishes for this file (tiktoken_ext/openai_public.py, cl100k_base's expected_hash).
CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
# cl100k_base's split pattern and special tokens, as tiktoken_ext/openai_public.py defines them.
CL100K_PAT_STR = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|"""
    r"""\s+(?!\S)|\s"""
)
CL100K_SPECIAL_TOKENS = {
    "<|endoftext|>": 100257,
    "<|fim_prefix|>": 100258,
    "<|fim_middle|>": 100259,
    "<|fim_suffix|>": 100260,
    "<|endofprompt|>": 100276,
}


@functools.cache
def cl100k() -> tiktoken.Encoding:
    """``cl100k_base`` from the file shipped in this package (no download), its SHA-256 checked first."""
    data = CL100K_FILE.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != CL100K_SHA256:
        raise ModelLoadError(f"{CL100K_FILE} is corrupt: SHA-256 {digest}, expected {CL100K_SHA256}.")
    ranks = {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in data.splitlines() if line)}
    return tiktoken.Encoding(
        name="cl100k_base", pat_str=CL100K_PAT_STR, mergeable_ranks=ranks, special_tokens=CL100K_SPECIAL_TOKENS
    )


def classify(ids: Sequence[int], *, index: int, mode: TokenIdMode, cls_id: int, sep_id: int) -> TokenIdKind:
    """How to read one token-id array under ``mode``; ``reject`` refuses every array with a 400."""
    if mode == "reject":
        raise InvalidInputError(
            f"input[{index}] is a token-id array, and this server does not accept token ids (--token-ids reject): "
            "send the text instead.",
            param="input",
        )
    if mode != "auto":
        return mode
    framed = len(ids) >= 2 and ids[0] == cls_id and ids[-1] == sep_id
    return "wordpiece" if framed else "tiktoken"


def decode_cl100k(id_lists: Sequence[Sequence[int]], *, indexes: Sequence[int]) -> list[str]:
    """Each cl100k array as text (bytes a split character leaves are replaced, as tiktoken does); a 400 names the
    first id that is not a cl100k token."""
    enc = cl100k()
    texts = []
    for index, ids in zip(indexes, id_lists, strict=True):
        if len(ids) == 0:
            raise InvalidInputError(f"input[{index}] is an empty token list.", param="input")
        try:
            texts.append(enc.decode_bytes(list(ids)).decode("utf-8", errors="replace"))
        except (KeyError, ValueError, OverflowError):
            bad = next((t for t in ids if not _is_cl100k_token(enc, t)), ids[0])
            raise InvalidInputError(
                f"input[{index}] contains token id {bad}, which is not a cl100k_base token; token-id arrays not "
                "framed by the model's [CLS] ... [SEP] ids are read as OpenAI cl100k_base ids.",
                param="input",
            ) from None
    return texts


def _is_cl100k_token(enc: tiktoken.Encoding, token: int) -> bool:
    try:
        enc.decode_single_token_bytes(token)
    except (KeyError, ValueError, OverflowError):
        return False
    return True
