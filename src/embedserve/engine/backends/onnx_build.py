"""Building the ONNX graphs the onnx backend runs: export from the torch encoder, int8 quantisation, and the cache.

Each graph lives in ``<cache root>/<key>/model.onnx``; the key hashes everything the graph depends on, and files
only appear there through ``os.replace`` of a complete temp file, so a crash never leaves a half-written graph.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
import warnings
from functools import partial
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from embedserve.engine.bert import BertEncoder, build_encoder
from embedserve.engine.build_cache import cache_key, remove_stale_temps, write_atomically
from embedserve.engine.loading import LoadedModel
from embedserve.engine.model_info import Pooling
from embedserve.engine.pooling import pool

logger = logging.getLogger(__name__)

Variant = Literal["float32", "int8"]

# Bump when the graph's inputs, outputs or contents change for the same weights, so old cache entries are ignored.
EXPORT_FORMAT_VERSION = 1
OPSET = 17
MODEL_FILE = "model.onnx"
# What each variant is, spelled out so that changing how it is built also changes its cache key.
_VARIANT_RECIPES: dict[Variant, str] = {
    "float32": "float32",
    "int8": "quantize_dynamic/QInt8-weights/per-channel/MatMul-only",
}


class EmbeddingGraph(nn.Module):
    """Encoder, pooling and normalisation in one module, so the exported graph outputs the final embeddings."""

    def __init__(self, encoder: BertEncoder, *, pooling: Pooling, normalize: bool) -> None:
        super().__init__()
        self.encoder = encoder
        self.pooling: Pooling = pooling
        self.normalize = normalize

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids, attention_mask)
        return pool(hidden, attention_mask, mode=self.pooling, normalize=self.normalize)


def cache_key_parts(model: LoadedModel, *, variant: Variant, weights: str) -> dict[str, object]:
    return {
        "format": EXPORT_FORMAT_VERSION,
        "opset": OPSET,
        "variant": _VARIANT_RECIPES[variant],
        "weights": weights,
        "config": dataclasses.asdict(model.config),
        "pooling": model.pooling,
        "normalize": model.normalize,
    }


def export_onnx(model: LoadedModel, dest: Path) -> None:
    """Trace the torch encoder + pooling to ``dest`` with dynamic batch and sequence axes (TorchScript exporter)."""
    encoder = build_encoder(model)
    encoder.unpad_ratio = math.inf  # a static graph: no data-dependent packing
    graph = EmbeddingGraph(encoder, pooling=model.pooling, normalize=model.normalize).eval()
    ids = torch.full((2, 8), min(100, model.config.vocab_size - 1), dtype=torch.int64)
    mask = torch.ones((2, 8), dtype=torch.int64)
    mask[1, 5:] = 0
    dynamic = {0: "batch", 1: "sequence"}
    # The TorchScript exporter warns that it is deprecated; its graphs are what ONNX Runtime's tools know best, and
    # the dynamo exporter would add onnxscript as a dependency.
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph,
            (ids, mask),
            str(dest),
            dynamo=False,
            opset_version=OPSET,
            input_names=["input_ids", "attention_mask"],
            output_names=["embeddings"],
            dynamic_axes={"input_ids": dynamic, "attention_mask": dynamic, "embeddings": {0: "batch"}},
        )


def quantize_int8(source: Path, dest: Path) -> None:
    """Dynamic int8: weights quantised per output channel ahead of time, activations per batch at run time.

    Only MatMul weights: per-tensor scales and quantised embedding tables both cost parity for no speed.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root_logger = logging.getLogger()
    quiet = _DropQuantizerChatter()
    root_logger.addFilter(quiet)
    try:
        quantize_dynamic(source, dest, weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul"])
    finally:
        root_logger.removeFilter(quiet)


class _DropQuantizerChatter(logging.Filter):
    """The quantiser logs a line per tensor straight to the root logger (a root-logger filter sees only those)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from_quantizer = "onnxruntime" in record.pathname and "quantization" in record.pathname
        return record.levelno >= logging.ERROR or not from_quantizer


def ensure_graph(model: LoadedModel, *, variant: Variant, root: Path, weights: str, rebuild: bool = False) -> Path:
    """The cached graph for ``variant``, built (and cached) first if it is missing or ``rebuild`` is set.

    ``weights`` is ``weights_fingerprint(model)``, computed once by the caller (hashing a large checkpoint takes a
    second or so). int8 is quantised from the float32 graph, which is cached on the way.
    """
    source = None
    if variant == "int8":
        source = ensure_graph(model, variant="float32", root=root, weights=weights, rebuild=rebuild)
    parts = cache_key_parts(model, variant=variant, weights=weights)
    folder = root / cache_key(parts)
    dest = folder / MODEL_FILE
    if dest.is_file() and not rebuild:
        logger.info("onnx %s graph: reusing the cached %s", variant, dest)
        return dest
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(folder)
    started = time.perf_counter()
    build = partial(export_onnx, model) if source is None else partial(quantize_int8, source)
    write_atomically(dest, build)
    write_atomically(folder / "key.json", lambda tmp: tmp.write_text(json.dumps(parts, indent=1, sort_keys=True)))
    action = "exported" if source is None else "quantised"
    logger.info("onnx %s graph: %s to %s in %.1f s", variant, action, dest, time.perf_counter() - started)
    return dest
