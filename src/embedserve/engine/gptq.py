"""GPTQ weight rounding for int8 layers: each weight column rounded in turn, its rounding error pushed onto the columns
not yet rounded in proportion to how the layer's inputs correlate (``H = sum_t w_t x_t x_t^T`` over calibration
tokens), so ``W x`` moves less than round-to-nearest moves it on inputs like the calibration's (Frantar et al., 2022).

On MiniLM with int8 on every linear, weight rounding, not activation rounding, was what kept the embeddings under
0.999 min cosine (exact weights with int8 activations: 0.999453); each calibration text's tokens share one unit of
weight, so one-word texts, whose few tokens set the worst cosines, count as much as a page of prose.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

import safetensors.torch
import torch
from torch import nn

from embedserve.engine.build_cache import cache_key, remove_stale_temps, weights_fingerprint, write_atomically
from embedserve.engine.loading import LoadedModel
from embedserve.engine.quant import QMAX

logger = logging.getLogger(__name__)


def calibration_texts() -> list[str]:
    """The fixed GPTQ calibration set shipped with the package: 400 passages of 8-60 words cut from this project's
    own documentation and 30 one- or two-word texts (the empty one included). No user data is ever used."""
    data = resources.files("embedserve.engine") / "data" / "gptq_calibration.jsonl"
    return [json.loads(line) for line in data.read_text(encoding="utf-8").splitlines() if line]


CODES_FORMAT = 2
"""Bumped whenever this module, ``quant.py`` or ``hadamard.py`` would choose other codes for the same inputs: older
cached codes are then ignored."""


class StaleGptqCodes(ValueError):
    """Cached codes that do not fit the layers built now (another shape, or other outlier channels)."""


def gptq_codes_file(model: LoadedModel, recipe: object, root: Path, *, calibration: str) -> Path:
    """Where ``recipe``'s codes for ``model`` are cached under ``root``: a key over everything that chooses them.
    ``recipe`` is a dataclass, keyed by its fields (sets sorted: their order changes with the process's hash seed);
    ``calibration`` is a digest of both calibration sets as token ids (texts, tokenizer and length limit)."""
    parts = {
        "format": CODES_FORMAT,
        "recipe": json.loads(json.dumps(dataclasses.asdict(recipe), sort_keys=True, default=sorted)),  # type: ignore[call-overload]
        "weights": weights_fingerprint(model),
        "config": dataclasses.asdict(model.config),
        "calibration": calibration,
        "torch": torch.__version__,
    }
    return root / cache_key(parts) / "gptq_codes.safetensors"


def check_codes(name: str, codes: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``codes`` if they were made for ``weight``: same shape, int8, and all-zero exactly in the columns the weight
    has zeroed (the layer's fp32 outlier channels, which a start may pick differently); else ``StaleGptqCodes``."""
    if codes.shape != weight.shape or codes.dtype != torch.int8:
        raise StaleGptqCodes(f"{name}: codes {tuple(codes.shape)} for a weight {tuple(weight.shape)}")
    if not torch.equal(codes.abs().sum(dim=0) == 0, weight.abs().sum(dim=0) == 0):
        raise StaleGptqCodes(f"{name}: the codes' fp32 outlier channels differ from this start's")
    return codes


def load_gptq_codes(path: Path) -> dict[str, torch.Tensor]:
    """The cached codes by layer name; empty when there are none or the file is unreadable (then rebuilt)."""
    if not path.is_file():
        return {}
    try:
        codes = safetensors.torch.load_file(str(path))
    except Exception as exc:  # a damaged or foreign file: rebuilding is always correct
        logger.warning("int8: ignoring unreadable cached GPTQ codes %s (%s); rebuilding them", path, exc)
        return {}
    logger.info("int8: GPTQ codes from the cache %s", path)
    return codes


def save_gptq_codes(path: Path, codes: dict[str, torch.Tensor]) -> None:
    """Write the codes where ``load_gptq_codes`` looks, atomically (a crash leaves the old file or none); a cache
    that cannot be written only costs the next start its GPTQ time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path.parent)
        write_atomically(
            path, lambda tmp: safetensors.torch.save_file({k: v.contiguous() for k, v in codes.items()}, str(tmp))
        )
    except OSError as exc:
        logger.warning("int8: could not cache GPTQ codes at %s: %s", path, exc)
        return
    logger.info("int8: GPTQ codes cached at %s", path)


def gptq_quantize(
    weight: torch.Tensor, hessian: torch.Tensor, scale: torch.Tensor, *, damp: float = 0.01
) -> torch.Tensor:
    """Int8 codes ``q`` (``weight ~= q * scale[:, None]``, ``scale`` per output row) chosen column by column to keep
    ``(W - q s) H (W - q s)^T`` small. Columns no calibration input reached (``H_jj = 0``: outlier channels the layer
    computes in fp32) get 0. ``damp`` times the mean diagonal is added to ``H`` so it inverts."""
    w = weight.detach().float().clone()
    h = hessian.detach().double().clone()  # inverted in float64: H can be near singular; the updates run in float32
    n = w.shape[1]
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h.diagonal().add_(damp * float(torch.diag(h).mean()))
    # the upper Cholesky factor of H^-1: row i holds how column i's error spreads over the columns after it
    u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True).float()
    s = scale.detach().float().reshape(-1)
    q = torch.empty_like(w)
    block = 128
    for start in range(0, n, block):
        end = min(start + block, n)
        wb, errs, ub = (
            w[:, start:end].clone(),
            torch.empty(w.shape[0], end - start, dtype=w.dtype),
            u[start:end, start:end],
        )
        for i in range(end - start):
            col = wb[:, i]
            q[:, start + i] = torch.clamp(torch.round(col / s), -QMAX, QMAX)
            err = (col - q[:, start + i] * s) / ub[i, i]
            wb[:, i:] -= err[:, None] * ub[i, i:][None, :]
            errs[:, i] = err
        w[:, end:] -= errs @ u[start:end, end:]
    return q.to(torch.int8)


@contextmanager
def _row_weights_hooks(
    layers: Mapping[str, nn.Module], input_rows: Callable[[nn.Module, torch.Tensor], torch.Tensor]
) -> Iterator[tuple[dict[str, torch.Tensor], list[torch.Tensor]]]:
    """Forward pre-hooks accumulating each layer's weighted ``X^T W X``; the caller sets the current batch's per-token
    weights (``weights[0]``, one per unpadded token; padded positions weigh 0)."""
    sums: dict[str, torch.Tensor] = {}
    current: list[torch.Tensor] = []

    def hook(module: nn.Module, args: tuple[torch.Tensor, ...], *, key: str) -> None:
        rows = input_rows(module, args[0])  # float32: sums of 10^4 weighted rows keep ~6 digits, GPTQ needs ~3
        w = current[0]
        if rows.shape[0] != w.shape[0]:  # unpacked (padded) batch: one weight per position, 0 on padding
            w = current[1]
        weighted = rows * w[:, None]
        sums[key] = sums[key].addmm_(rows.t(), weighted) if key in sums else rows.t() @ weighted

    handles = [m.register_forward_pre_hook(lambda m, a, key=k: hook(m, a, key=key)) for k, m in layers.items()]
    try:
        yield sums, current
    finally:
        for handle in handles:
            handle.remove()


def collect_hessians(
    encoder: nn.Module,
    layers: Mapping[str, nn.Module],
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    input_rows: Callable[[nn.Module, torch.Tensor], torch.Tensor],
) -> dict[str, torch.Tensor]:
    """``H`` per named layer over ``batches`` of ``(ids, mask)``, each text's tokens weighted ``1 / its length``, the
    rows being what ``input_rows(layer, x)`` makes of the layer's input (the rotated, smoothed rows it quantises)."""
    with _row_weights_hooks(layers, input_rows) as (sums, current), torch.inference_mode():
        for ids, mask in batches:
            per_text = 1.0 / mask.sum(dim=1, keepdim=True).float()
            padded = (mask.float() * per_text).reshape(-1)
            current[:] = [padded[mask.reshape(-1).bool()], padded]
            encoder(ids, mask)
    return sums
