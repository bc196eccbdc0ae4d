"""``embedserve prepare``: start the engine once, as ``serve`` would, run one pass and stop, so that the model is
downloaded and every cache the backend keeps is written before a server needs it (an image build, a volume that
several replicas share). No HTTP here; ``cli.py`` prints the result."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from embedserve.engine.build_cache import cache_root
from embedserve.engine.engine import Engine
from embedserve.engine.model_info import ModelInfo
from embedserve.errors import EngineError
from embedserve.settings import EngineSettings

CACHE_KINDS = ("int8", "onnx", "kernels")
_KEPT = ("gptq_codes.safetensors", "model.onnx", "*.so")  # what a later start reads (not build intermediates)


@dataclass(frozen=True, slots=True)
class Prepared:
    info: ModelInfo
    seconds: float
    written: list[Path]  # cache files this run wrote (none when they were all there already)


def _kept_files(settings: EngineSettings) -> list[Path]:
    roots = [cache_root(settings, kind) for kind in CACHE_KINDS]
    return sorted(path for root in roots for pattern in _KEPT for path in root.rglob(pattern) if path.is_file())


def prepare(settings: EngineSettings) -> Prepared:
    """Build what ``settings`` serve from; ``EngineError`` when int8's GPTQ codes could not be cached (a ``serve``
    would then compute them again, for minutes, at every start)."""
    started, since = time.perf_counter(), time.time()
    engine = Engine(settings)
    engine.embed_texts(["embedserve prepare"])
    info = engine.info
    kept = _kept_files(settings)
    gptq = info.backend == "torch" and info.dtype == "int8" and not info.random_weights  # onnx int8 keeps no codes
    if gptq and not any(p.name == _KEPT[0] for p in kept):
        raise EngineError(
            f"int8's GPTQ codes could not be cached under {cache_root(settings, 'int8')} (see the warning above): "
            "every start would compute them again. Pass a writable --cache-dir."
        )
    written = [path for path in kept if path.stat().st_mtime >= since]
    return Prepared(info=info, seconds=time.perf_counter() - started, written=written)
