"""Real weights (all-MiniLM-L6-v2): embedserve's torch engine matches sentence-transformers and is batch-invariant."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embedserve.engine import Engine, EngineSettings
from tests.model.sentences import sentences


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.asarray(np.sum(a * b, axis=1))


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return sentences(240)


@pytest.fixture(scope="module")
def reference(minilm_model_dir: Path, texts: list[str]) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(minilm_model_dir), device="cpu")
    return np.asarray(model.encode(texts, batch_size=32, convert_to_numpy=True), dtype=np.float32)


@pytest.fixture
async def engine(minilm_model_dir: Path) -> AsyncIterator[Engine]:
    eng = Engine(
        EngineSettings(
            model=str(minilm_model_dir), backend="torch", dtype="float32", max_batch_tokens=4096, max_padding_ratio=1000
        )
    )
    await eng.start()
    yield eng
    await eng.stop()


async def test_fp32_matches_sentence_transformers(engine: Engine, texts: list[str], reference: np.ndarray) -> None:
    ours = await engine.embed(await engine.tokenize(texts, truncate=True))
    cos = cosines(ours, reference)
    assert len(texts) >= 200
    assert cos.min() >= 0.99999, f"min cosine {cos.min():.7f} at {texts[int(cos.argmin())][:40]!r}"
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


async def test_text_alone_equals_text_in_mixed_batch(engine: Engine, texts: list[str]) -> None:
    batch = await engine.embed(await engine.tokenize(texts[:60], truncate=True))
    alone = np.stack([(await engine.embed(await engine.tokenize([t], truncate=True)))[0] for t in texts[:60]])
    cos = cosines(alone, batch)
    assert cos.min() >= 0.99999, f"min cosine {cos.min():.7f}"


async def test_token_ids_embed_like_their_text(engine: Engine) -> None:
    (enc,) = await engine.tokenize(["Laura is a DJ."], truncate=False)
    from_ids = engine.encode_token_ids([list(enc.ids[1:-1])], truncate=False)
    assert np.array_equal(await engine.embed([enc]), await engine.embed(from_ids))


def fp32_encoder_and_batch(minilm_model_dir: Path, texts: list[str]) -> tuple[Any, Any, Any]:
    """The fp32 torch encoder on MiniLM, and 24 of the texts as one padded batch of torch ids and mask."""
    import torch

    from embedserve.engine.batching import pad_batch
    from embedserve.engine.bert import build_encoder
    from embedserve.engine.loading import load_model
    from embedserve.engine.tokenizer import WordPieceTokenizer

    model = load_model(EngineSettings(model=str(minilm_model_dir), backend="torch", dtype="float32"))
    tok = WordPieceTokenizer(model.tokenizer_path, vocab_size=model.config.vocab_size)
    ids, mask = pad_batch(tok.encode_texts(texts[:24], truncate=True, max_tokens=512), pad_id=tok.pad_id)
    return build_encoder(model), torch.from_numpy(ids), torch.from_numpy(mask)


def test_packed_batch_matches_the_padded_one(minilm_model_dir: Path, texts: list[str]) -> None:
    """A batch padded past ``unpad_ratio`` runs its token-wise layers on the real tokens only; every real position
    must come out as the fully padded computation gives it (padded positions come back as zeros, not computed)."""
    import torch

    encoder, ids, mask = fp32_encoder_and_batch(minilm_model_dir, texts)
    assert mask.numel() >= 1.5 * mask.sum()  # plenty of padding
    with torch.inference_mode():
        encoder.unpad_ratio = float("inf")
        dense = encoder(ids, mask)
        encoder.unpad_ratio = 1.0
        packed = encoder(ids, mask)
    real = mask.bool()
    assert torch.allclose(packed[real], dense[real], atol=1e-4)
    assert packed[~real].abs().max() == 0 < dense[~real].abs().max()


@pytest.mark.parametrize("unpad_ratio", [float("inf"), 1.0], ids=["padded", "packed"])
def test_fused_qkv_computes_what_the_three_projections_do(
    minilm_model_dir: Path, texts: list[str], unpad_ratio: float
) -> None:
    """``fuse_qkv`` (the int8 path's one query/key/value projection) changes where the numbers are computed, not
    what they are: on real weights, padded or packed, every real position matches the unfused encoder."""
    import torch

    from embedserve.engine.bert import fuse_qkv

    encoder, ids, mask = fp32_encoder_and_batch(minilm_model_dir, texts)
    encoder.unpad_ratio = unpad_ratio
    with torch.inference_mode():
        separate = encoder(ids, mask)
        fuse_qkv(encoder)
        fused = encoder(ids, mask)
    assert not any(name.endswith((".query", ".key", ".value")) for name, _ in encoder.named_modules())
    real = mask.bool()
    torch.testing.assert_close(fused[real], separate[real], rtol=1e-5, atol=1e-5)
