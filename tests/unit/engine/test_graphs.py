"""``--cuda-graphs``: the buckets, the padding into them, and that a batch padded to its bucket gives the same vectors
(what replaying a bucket's graph relies on). Capture and replay themselves need a GPU: ``tests/model/test_gpu.py``."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from embedserve.cli import main
from embedserve.engine.backends import check_settings, create_backend
from embedserve.engine.batching import pad_batch
from embedserve.engine.bert import BertEncoder
from embedserve.engine.graphs import GRAPH_MAX_TOKENS, bucket_for, graph_buckets, pad_to_bucket
from embedserve.engine.loading import load_model
from embedserve.engine.tokenizer import WordPieceTokenizer
from embedserve.errors import InvalidRequestError
from embedserve.settings import EngineSettings

BGE = graph_buckets(max_tokens=GRAPH_MAX_TOKENS, max_seq=512, max_rows=256)


def test_buckets_cover_the_launch_bound_sizes_and_no_more() -> None:
    assert (1, 16) in BGE and (256, 16) in BGE and (32, 128) in BGE and (8, 512) in BGE
    assert all(rows * seq <= GRAPH_MAX_TOKENS for rows, seq in BGE)
    assert all(rows & (rows - 1) == 0 for rows, _ in BGE)  # powers of two
    assert (512, 16) not in BGE and (64, 128) not in BGE  # over 4096 padded tokens
    assert len(BGE) == len(set(BGE)) == 9 + 8 + 7 + 6 + 5 + 4


def test_buckets_respect_the_model_context_and_the_batch_size_limit() -> None:
    short_model = graph_buckets(max_tokens=4096, max_seq=128, max_rows=8)
    assert max(seq for _, seq in short_model) == 128
    assert max(rows for rows, _ in short_model) == 8
    odd_context = graph_buckets(max_tokens=4096, max_seq=100, max_rows=4)
    assert {seq for _, seq in odd_context} == {16, 32, 64, 100}


@pytest.mark.parametrize(
    ("rows", "seq", "bucket"),
    [(1, 7, (1, 16)), (1, 16, (1, 16)), (3, 17, (4, 32)), (32, 12, (32, 16)), (200, 10, (256, 16)), (9, 500, None)],
)
def test_a_batch_goes_to_the_smallest_bucket_that_holds_it(rows: int, seq: int, bucket: tuple[int, int] | None) -> None:
    assert bucket_for(BGE, rows, seq) == bucket


def test_padding_to_a_bucket_keeps_the_batch_and_masks_the_rest() -> None:
    ids = np.array([[101, 7, 8, 102], [101, 9, 102, 0]], dtype=np.int64)
    mask = np.array([[1, 1, 1, 1], [1, 1, 1, 0]], dtype=np.int64)
    padded_ids, padded_mask = pad_to_bucket(ids, mask, (4, 16), pad_id=0)
    assert padded_ids.shape == padded_mask.shape == (4, 16)
    assert (padded_ids[:2, :4] == ids).all() and (padded_mask[:2, :4] == mask).all()
    assert padded_mask[:2, 4:].sum() == 0 and (padded_ids[:, 4:] == 0).all()
    assert (padded_mask[2:].sum(axis=1) == 1).all()  # a discarded row still has one visible token


@pytest.mark.parametrize("unpad_ratio", [math.inf, BertEncoder.unpad_ratio])
def test_a_batch_padded_to_its_bucket_gives_the_same_vectors(minilm_model_dir: Path, unpad_ratio: float) -> None:
    settings = EngineSettings(model=str(minilm_model_dir), device="cpu", dtype="float32")
    model = load_model(settings)
    backend = create_backend(model, settings)
    backend.encoder.unpad_ratio = unpad_ratio  # type: ignore[attr-defined]  # inf: as on CUDA, where graphs run
    tok = WordPieceTokenizer(model.tokenizer_path, vocab_size=model.config.vocab_size)
    texts = ["Laura is a DJ.", "A much longer sentence about the weather in Lisbon and the trains.", "Hi"]
    ids, mask = pad_batch(tok.encode_texts(texts, truncate=True, max_tokens=512), pad_id=tok.pad_id)
    bucket = bucket_for(BGE, *ids.shape)
    assert bucket == (4, 16)
    alone = backend.forward(ids, mask)
    padded = backend.forward(*pad_to_bucket(ids, mask, bucket, tok.pad_id))
    assert padded.shape == (4, alone.shape[1])
    np.testing.assert_allclose(padded[:3], alone, atol=2e-6)


def test_cuda_graphs_are_refused_off_cuda(reference_model_dir: Path) -> None:
    on_cpu = EngineSettings(model=str(reference_model_dir), load_format="dummy", device="cpu", cuda_graphs=True)
    with pytest.raises(InvalidRequestError, match="needs a CUDA device"):
        check_settings(on_cpu)
    onnx = on_cpu.model_copy(update={"backend": "onnx"})
    with pytest.raises(InvalidRequestError, match="not the onnx backend"):
        check_settings(onnx)


def test_the_serve_flag_reaches_the_engine_and_fails_with_one_line_on_cpu(
    reference_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["serve", "--model", str(reference_model_dir), "--load-format", "dummy", "--device", "cpu"]
    code = main([*argv, "--cuda-graphs", "--no-auth", "--port", "0", "--data-dir", str(tmp_path)])
    assert code == 2
    assert "--cuda-graphs needs a CUDA device (--device cuda)" in capsys.readouterr().err
