"""Building the int8 encoder the torch backend serves: the recipe, its calibration batches, GPTQ codes from the cache
(or computed and cached), and the fused input kernel's build folder.

``int8_recipe.py`` says what each recipe does to the layers; this module is what ``--dtype int8`` (and ``--dtype auto``
on CPUs with AVX512-VNNI but no native bf16) runs at start-up.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from pathlib import Path

import torch

from embedserve.engine import fused
from embedserve.engine.batching import pad_batch
from embedserve.engine.bert import BertEncoder, build_encoder, fuse_qkv
from embedserve.engine.gptq import (
    StaleGptqCodes,
    calibration_texts,
    gptq_codes_file,
    load_gptq_codes,
    save_gptq_codes,
)
from embedserve.engine.int8_recipe import RECIPES, Int8Recipe, quantize_encoder
from embedserve.engine.loading import LoadedModel
from embedserve.engine.quant import CALIBRATION_TEXTS
from embedserve.engine.tokenizer import WordPieceTokenizer

logger = logging.getLogger(__name__)

INT8_RECIPE = RECIPES["gptq+out32"][1]
"""What ``--dtype int8`` builds: int8 on every linear, the FFN down projection's input Hadamard-rotated, SmoothQuant
and 32 fp32 outlier channels per layer, weights rounded by GPTQ (cached between starts). MiniLM min cosine vs fp32
over 520 sentences 0.999312 on oneDNN's kernel (Zen 5; 16 outlier channels read 0.999127-0.999257, too near the
gate); bge-large 1.09-1.21x prepacked bf16 in library calls on a Zen 5 and 1.80-2.11x fp32 on an Ice Lake, where the
recipe before it (``bf16-ffn-out``: FFN-out in bf16, weights rounded to nearest) read 0.999385 and 1.01-1.09x bf16
(docs/int8-rotation.md, docs/performance.md)."""

Batches = list[tuple[torch.Tensor, torch.Tensor]]


def _gptq_batches(model: LoadedModel, tokenizer: WordPieceTokenizer) -> Batches:
    """GPTQ's calibration texts as length-sorted ``(ids, mask)`` batches of 32."""
    texts = sorted(
        tokenizer.encode_texts(calibration_texts(), truncate=True, max_tokens=model.max_seq_length),
        key=lambda e: len(e.ids),
    )
    batches = (pad_batch(texts[start : start + 32], pad_id=tokenizer.pad_id) for start in range(0, len(texts), 32))
    return [(torch.from_numpy(ids), torch.from_numpy(mask)) for ids, mask in batches]


def _served_recipe(model: LoadedModel, recipe: Int8Recipe) -> Int8Recipe:
    """``recipe``, without GPTQ on seeded random weights (``--load-format dummy``, the README's replica): GPTQ only
    chooses which codes the weights get, for fidelity; the speed is the same whatever the codes, and random weights
    have no fidelity to keep, so the start takes seconds, not minutes."""
    if not recipe.gptq or model.weights_path is not None:
        return recipe
    logger.info("int8: random weights (--load-format dummy): weights rounded to nearest, GPTQ skipped")
    return dataclasses.replace(recipe, gptq=False)


def _codes_file(model: LoadedModel, recipe: Int8Recipe, cache: Path, ids: torch.Tensor, gptq_batches: Batches) -> Path:
    """Where the GPTQ codes live, keyed by both calibration sets as token ids (texts, tokenizer, length limit)."""
    tokens = hashlib.sha256(ids.numpy().tobytes())
    for batch_ids, _ in gptq_batches:
        tokens.update(batch_ids.numpy().tobytes())
    return gptq_codes_file(model, recipe, cache, calibration=tokens.hexdigest())


def build_int8_encoder(
    model: LoadedModel,
    *,
    recipe: Int8Recipe = INT8_RECIPE,
    emulate: bool = False,
    bf16: bool,
    cache: Path | None = None,
    kernels: Path | None = None,
) -> BertEncoder:
    """W8A8 (per-token activations, per-channel weights) as ``recipe`` says, calibrated on fixed texts. ``emulate``
    builds the float64 emulation of the same integer arithmetic (any CPU; fidelity measurements only); ``bf16``: a
    layer the recipe keeps out of int8 runs in bf16 (else fp32). ``cache``: a folder where a GPTQ recipe's int8 codes
    are kept between starts (GPTQ takes minutes on bge-large, 2 cores); ``kernels``: where the fused input kernel is
    compiled and kept (default: torch's extensions folder)."""
    started = time.perf_counter()
    if kernels is not None:
        fused.set_build_root(kernels)
    recipe = _served_recipe(model, recipe)
    tokenizer = WordPieceTokenizer(model.tokenizer_path, vocab_size=model.config.vocab_size)
    encodings = tokenizer.encode_texts(CALIBRATION_TEXTS, truncate=True, max_tokens=model.max_seq_length)
    ids, mask = (torch.from_numpy(a) for a in pad_batch(encodings, pad_id=tokenizer.pad_id))
    gptq_batches = _gptq_batches(model, tokenizer) if recipe.gptq else []
    codes_file = None
    if recipe.gptq and cache is not None and not emulate:
        codes_file = _codes_file(model, recipe, cache, ids, gptq_batches)
    codes = load_gptq_codes(codes_file) if codes_file is not None else {}
    loaded = set(codes)
    if recipe.gptq and not codes:
        where = f"cached at {codes_file} for later starts" if codes_file else "not cached"
        logger.info("int8: computing GPTQ weight codes, once (bge-large: 3-4 minutes on 2 cores); %s", where)

    def quantize() -> tuple[BertEncoder, list[str]]:
        encoder = build_encoder(model)
        # One projection for query, key and value: their input is quantised once, not three times (bge-large on a
        # Zen 5, library calls: 1.03-1.04x at 12, 128 and 500 tokens). Before calibration, so the fused projection
        # gets one set of smoothing factors and outlier channels.
        fuse_qkv(encoder)
        replaced = quantize_encoder(
            encoder, lambda: encoder(ids, mask), recipe, bf16=bf16, gptq_batches=gptq_batches, gptq_codes=codes,
            emulate=emulate,
        )  # fmt: skip
        return encoder, replaced

    try:
        encoder, replaced = quantize()
    except StaleGptqCodes as exc:  # the layers this start built are not the ones the codes were made for
        logger.warning("int8: cached GPTQ codes %s do not fit (%s); computing them again", codes_file, exc)
        codes.clear()
        loaded = set()
        encoder, replaced = quantize()
    if codes_file is not None and set(codes) != loaded:  # computed now: kept for the next start
        save_gptq_codes(codes_file, codes)
    # built (or loaded from its cache) now, not on the first request: a first build takes ~20 s
    kernels_used = "float64 emulation" if emulate else "fused C++ kernel" if fused.fused_available() else "torch ops"
    logger.info(
        "int8: quantised %d linear layers in %.1fs; activations quantised by %s",
        len(replaced), time.perf_counter() - started, kernels_used,
    )  # fmt: skip
    return encoder.eval()
