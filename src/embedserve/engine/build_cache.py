"""Files built once from a model and reused across starts (ONNX graphs, GPTQ's int8 codes): where they live, the key
that says what they were built from, and a write that never leaves a half-written file where a reader looks."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from embedserve.engine.loading import LoadedModel
from embedserve.settings import EngineSettings

_STALE_TEMP_SECONDS = 3600.0


def cache_root(settings: EngineSettings, kind: str) -> Path:
    """``<cache_dir or $XDG_CACHE_HOME/embedserve>/<kind>``."""
    if settings.cache_dir is not None:
        return settings.cache_dir / kind
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "embedserve" / kind


def weights_fingerprint(model: LoadedModel) -> str:
    if model.weights_path is None:
        return f"dummy:seed={model.seed}"
    with model.weights_path.open("rb") as f:
        return "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()


def cache_key(parts: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def write_atomically(dest: Path, build: Callable[[Path], object]) -> None:
    """``build`` writes a temp file beside ``dest``; only a complete, synced file is renamed into place."""
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        build(tmp)
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(dest.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def remove_stale_temps(folder: Path) -> None:
    """Temp files a crashed build left behind; recent ones may belong to another process building right now."""
    cutoff = time.time() - _STALE_TEMP_SECONDS
    for tmp in folder.glob(".*.tmp"):
        try:
            if tmp.stat().st_mtime < cutoff:
                tmp.unlink()
        except OSError:
            continue
