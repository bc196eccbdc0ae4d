"""Fused CPU kernels for Int8Linear's input side, JIT-compiled at first use (``csrc/rotate_quantize.cpp``).

``rotate_quantize`` does ``HadamardRotation``, the outlier gather, smoothing and ``_quantize_rows_shifted_`` in one
pass per row instead of several torch passes over the whole batch. It needs a C++ compiler and ninja at first use
(the build is kept under ``set_build_root``'s folder, the engine's ``<cache dir>/kernels``, else torch's extensions
folder); where either is missing ``fused_available()`` says False, logs why once, and callers keep the torch path.
``EMBEDSERVE_FUSED_KERNELS=0`` turns the kernels off (read per call).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from types import ModuleType

import torch

from embedserve.engine.hadamard import HadamardRotation

logger = logging.getLogger(__name__)

ENV_SWITCH = "EMBEDSERVE_FUSED_KERNELS"
_STALE_LOCK_SECONDS = 300.0
_SOURCE = Path(__file__).with_name("csrc") / "rotate_quantize.cpp"


def _cpu_tag() -> str:
    """A short hash of this CPU's feature flags: ``-march=native`` builds must not be shared across CPUs (a cached
    build from another host in a shared home could use instructions this one lacks)."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        flags = torch.backends.cpu.get_cpu_capability()
    return hashlib.sha256(flags.encode()).hexdigest()[:10]


_build_root: list[Path] = []


def set_build_root(root: Path) -> None:
    """Compile and keep the kernels under ``root`` (the engine's cache dir, so that ``embedserve prepare`` and a
    shared cache carry them) instead of torch's extensions folder; only before the first build in this process."""
    _build_root[:] = [root]


def _build_directory(name: str) -> Path:
    """``<root>/<name>-torch<version>-py<version>`` (a cache shared by images of other torch or Python versions keeps
    one build each); torch's own folder without a root, or where the root's folder cannot be written (a read-only
    volume: torch creates a lock file there on every first load in a process)."""
    from torch.utils import cpp_extension

    if _build_root:
        version = f"torch{torch.__version__}-py{sys.version_info.major}{sys.version_info.minor}"
        folder = _build_root[0] / f"{name}-{version}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            logger.warning("cannot build the fused kernel under %s (%s); using torch's extensions folder", folder, exc)
        else:
            if os.access(folder, os.W_OK):
                return folder
            logger.warning("%s is read-only; the fused kernel is built in torch's extensions folder", folder)
    return Path(cpp_extension._get_build_directory(name, verbose=False))


@functools.cache
def _extension() -> ModuleType | None:
    """The compiled module, built (or loaded from its cache) once per process; None where that failed."""
    from torch.utils import cpp_extension  # imported here: it pulls in setuptools, unneeded unless int8 is served

    try:
        _ninja_on_path()
        name = f"embedserve_rotate_quantize_{_cpu_tag()}"
        build_directory = _build_directory(name)
        _drop_stale_lock(build_directory)
        return cpp_extension.load(  # type: ignore[no-any-return]
            name=name,
            sources=[str(_SOURCE)],
            build_directory=str(build_directory),
            # at::parallel_for is inline: its OpenMP region is compiled here. The link resolves libgomp.so.1 to the one
            # torch has already loaded (same soname), so torch's thread count governs it too.
            extra_cflags=["-O3", "-march=native", "-fopenmp"],
            extra_ldflags=["-fopenmp"],
            verbose=False,
        )
    except Exception as exc:  # no compiler, no ninja, a failed build: every one means the torch path
        logger.warning("fused int8 kernels unavailable, Int8Linear keeps the torch path: %s", exc)
        return None


def _drop_stale_lock(build_dir: Path) -> None:
    """torch waits without limit on the build folder's lock file; one left by a process killed mid-build (a build
    takes ~20 s) would hang every later start, so a lock older than ``_STALE_LOCK_SECONDS`` is removed."""
    lock = build_dir / "lock"
    try:
        if time.time() - lock.stat().st_mtime > _STALE_LOCK_SECONDS:
            lock.unlink()
            logger.warning("removed a stale kernel build lock %s (a build killed midway)", lock)
    except FileNotFoundError:
        pass


def _ninja_on_path() -> None:
    """torch runs ``ninja`` from PATH; a server started as ``/venv/bin/embedserve`` without the venv on PATH still
    has the pip package's binary, so its directory goes at the end of PATH (a system ninja keeps precedence)."""
    if shutil.which("ninja") is None:
        import ninja  # the pip package (a dependency); its binary sits in BIN_DIR

        os.environ["PATH"] = os.pathsep.join(filter(None, (os.environ.get("PATH"), ninja.BIN_DIR)))


def fused_available() -> bool:
    """Whether the fused kernels can run here (compiling them on first call); False if switched off by env."""
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return False
    return _extension() is not None


def rotate_quantize(
    rows: torch.Tensor,
    rotation: HadamardRotation | None,
    *,
    act_factor: torch.Tensor | None = None,
    outliers: torch.Tensor | None = None,
    clip: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``T x`` for each row of ``rows`` (N x n fp32), then per row: the ``outliers`` columns (N x k fp32, rotated,
    not smoothed; None without ``outliers``), ``* act_factor``, and uint8 ``q + 128`` with its scale (N x 1), as
    ``_quantize_rows_shifted_(rotation(rows)[...] * act_factor, clip)`` computes them up to fp32 rounding order.
    Without ``rotation`` (blocks of width 1: no butterfly) the same steps on ``rows`` as they are (scales exact)."""
    ext = _extension()
    if ext is None:
        raise RuntimeError("the fused kernels are unavailable here; check fused_available() first")
    n = rows.shape[-1]
    q, scale, cols = ext.rotate_quantize(
        rows.float().contiguous(),
        None if rotation is None else _f32(rotation.signs),
        n if rotation is None else rotation.blocks,
        1 if rotation is None else rotation.width,
        1.0 if rotation is None else rotation.scale,
        None if rotation is None else _f32(rotation.dense),
        None if outliers is None else outliers.long().contiguous(),
        _f32(act_factor),
        clip,
    )
    return q, scale, cols


def _f32(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.float().contiguous()
