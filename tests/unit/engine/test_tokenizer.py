"""Tokenisation: exact counts, explicit truncation, token-id validation and [CLS]/[SEP] wrapping."""

from __future__ import annotations

from pathlib import Path

import pytest

from embedserve.engine.tokenizer import WordPieceTokenizer
from embedserve.errors import InvalidInputError

LAURA = (101, 6874, 2003, 1037, 6520, 1012, 102)


@pytest.fixture(scope="module")
def tok(reference_model_dir: Path) -> WordPieceTokenizer:
    return WordPieceTokenizer(reference_model_dir / "tokenizer.json", vocab_size=30522)


def test_laura_is_seven_reference_ids(tok: WordPieceTokenizer) -> None:
    (enc,) = tok.encode_texts(["Laura is a DJ."], truncate=False, max_tokens=512)
    assert enc.ids == LAURA and enc.length == 7 and not enc.truncated


def test_long_text_keeps_full_length_unless_truncation_asked(tok: WordPieceTokenizer) -> None:
    (full,) = tok.encode_texts(["word " * 600], truncate=False, max_tokens=512)
    assert full.length == 602 and not full.truncated
    (cut,) = tok.encode_texts(["word " * 600], truncate=True, max_tokens=512)
    assert cut.length == 512 and cut.truncated and cut.ids[0] == 101 and cut.ids[-1] == 102


def test_token_ids_wrapped_unless_already_wrapped(tok: WordPieceTokenizer) -> None:
    bare, wrapped = tok.encode_ids([list(LAURA[1:-1]), list(LAURA)], truncate=False, max_tokens=512)
    assert bare.ids == LAURA and wrapped.ids == LAURA


@pytest.mark.parametrize(("ids", "fragment"), [([5, 30522], "30522"), ([-1], "-1"), ([], "empty")])
def test_bad_token_ids_name_index_and_id(tok: WordPieceTokenizer, ids: list[int], fragment: str) -> None:
    with pytest.raises(InvalidInputError) as err:
        tok.encode_ids([[101, 102], ids], truncate=False, max_tokens=512)
    assert "input[1]" in err.value.message and fragment in err.value.message and err.value.param == "input"


def test_token_id_truncation_marks_it(tok: WordPieceTokenizer) -> None:
    (enc,) = tok.encode_ids([[2000] * 600], truncate=True, max_tokens=512)
    assert enc.length == 512 and enc.truncated and enc.ids[-1] == 102
