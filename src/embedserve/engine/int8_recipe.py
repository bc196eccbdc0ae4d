"""Which int8 treatment each linear layer of the BERT encoder gets (Hadamard rotation, SmoothQuant factors, fp32
outlier channels, or none of int8 at all for the FFN down projection), and the one function that applies a recipe."""

from __future__ import annotations

from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from embedserve.engine.gptq import check_codes, collect_hessians, gptq_quantize
from embedserve.engine.hadamard import HadamardRotation
from embedserve.engine.prepacked import onednn_bf16_supported
from embedserve.engine.quant import (
    PER_TOKEN,
    ActScales,
    BF16Linear,
    Int8Linear,
    activation_maxima,
    is_ffn_output,
    quantize_linears,
    replace_linears,
)

KINDS = frozenset({"qkv", "attn_out", "ffn_in", "ffn_out"})
"""The four matmuls of a BERT layer, by the input they take: the LayerNorm output (``qkv``, ``ffn_in``), attention's
context (``attn_out``) and the GELU output (``ffn_out``, the FFN's down projection)."""


def linear_kind(name: str) -> str:
    """The kind (one of ``KINDS``) of the ``nn.Linear`` called ``name`` in a ``BertEncoder``."""
    if ".attention.self." in name:
        return "qkv"
    if name.endswith("attention.output.dense"):
        return "attn_out"
    if name.endswith("intermediate.dense"):
        return "ffn_in"
    if is_ffn_output(name):
        return "ffn_out"
    raise ValueError(f"not a BERT encoder linear: {name}")


@dataclass(frozen=True, slots=True)
class Int8Recipe:
    """``rotate``/``smooth``: the kinds whose inputs are Hadamard-rotated / SmoothQuant-smoothed (with ``outliers``
    channels kept in fp32); ``float_ffn_out`` keeps the FFN down projection out of int8 (bf16 where the CPU has it,
    fp32 otherwise); ``mix=False`` rotates non-power-of-two widths block-diagonally instead of with ``H_12``;
    ``seed`` puts a seeded random +-1 diagonal before each Hadamard (QuaRot's randomised Hadamard; one per layer).
    ``act``: how the ``tuned`` kinds take their activation scales (channel groups, clipping); elsewhere per token.
    ``gptq``: every int8 weight rounded by GPTQ (``engine/gptq.py``) instead of to nearest."""

    rotate: frozenset[str] = frozenset()
    smooth: frozenset[str] = KINDS
    outliers: int = 16
    alpha: float = 0.5
    float_ffn_out: bool = False
    mix: bool = True
    seed: int | None = None
    act: ActScales = PER_TOKEN
    tuned: frozenset[str] = frozenset({"ffn_out"})
    gptq: bool = False


SMOOTHED_FLOAT_FFN_OUT = Int8Recipe(float_ffn_out=True)
"""The recipe before rotations: SmoothQuant + 16 outlier channels everywhere, the FFN down projection not in int8."""

_NONE: frozenset[str] = frozenset()
_FFN_OUT = frozenset({"ffn_out"})
_ROT_FFN_OUT = Int8Recipe(rotate=_FFN_OUT)


def _rot(group: int = 0, seed: int | None = None, clip: float = 1.0, outliers: int = 16) -> Int8Recipe:
    return Int8Recipe(rotate=_FFN_OUT, outliers=outliers, seed=seed, act=ActScales(group=group, clip=clip))


RECIPES: dict[str, tuple[str, Int8Recipe]] = {
    "bf16-ffn-out": ("smoothed + 16 outliers; FFN-out bf16 (served before GPTQ, 2026-12-07)", SMOOTHED_FLOAT_FFN_OUT),
    "smooth": ("smoothed + 16 outliers everywhere, FFN-out int8 (no rotation)", Int8Recipe()),
    "rot-ffn-out": (
        "FFN-out rotated (no smoothing there); smoothed + outliers elsewhere",
        Int8Recipe(rotate=_FFN_OUT, smooth=KINDS - _FFN_OUT),
    ),
    "rot-ffn-out+smooth": ("FFN-out rotated then smoothed + outliers; smoothed + outliers elsewhere", _ROT_FFN_OUT),
    "rot-all": ("every linear rotated, no smoothing, no outliers", Int8Recipe(rotate=KINDS, smooth=_NONE, outliers=0)),
    "rot-all-block": (
        "every linear rotated block-diagonally (H_128/H_32 blocks), no smoothing",
        Int8Recipe(rotate=KINDS, smooth=_NONE, outliers=0, mix=False),
    ),
    "rot-all+smooth": ("every linear rotated, then smoothed + 16 outliers", Int8Recipe(rotate=KINDS)),
    "rot-all+smooth0": ("every linear rotated, then smoothed, no outliers", Int8Recipe(rotate=KINDS, outliers=0)),
    **{
        f"rand{seed}": (f"rot-ffn-out+smooth, random +-1 diagonal before H (seed {seed})", _rot(seed=seed))
        for seed in range(4)
    },
    **{
        f"group{g}": (f"rot-ffn-out+smooth, FFN-out activation scales per {g} channels", _rot(group=g))
        for g in (128, 32)
    },
    **{f"clip{c}": (f"rot-ffn-out+smooth, FFN-out activation scales at {c} x max", _rot(clip=c)) for c in (0.95, 0.9)},
    **{f"out{k}": (f"rot-ffn-out+smooth with {k} outlier channels per layer", _rot(outliers=k)) for k in (32, 64)},
    **{
        f"group128+out{k}": (f"rot-ffn-out+smooth, {k} outliers, FFN-out scales per 128 chans", _rot(128, outliers=k))
        for k in (32, 64)
    },
    "gptq": ("rot-ffn-out+smooth, weights rounded by GPTQ", Int8Recipe(rotate=_FFN_OUT, gptq=True)),
    "gptq+out32": (
        "rot-ffn-out+smooth, 32 outliers per layer, weights rounded by GPTQ",
        Int8Recipe(rotate=_FFN_OUT, outliers=32, gptq=True),
    ),
    "rot-all+gptq": (
        "every linear rotated, no smoothing, no outliers, weights rounded by GPTQ",
        Int8Recipe(rotate=KINDS, smooth=_NONE, outliers=0, gptq=True),
    ),
    "rot-all+smooth0+gptq": (
        "every linear rotated, then smoothed, no outliers, weights rounded by GPTQ",
        Int8Recipe(rotate=KINDS, outliers=0, gptq=True),
    ),
    "bf16-ffn-out+gptq": ("bf16-ffn-out, weights rounded by GPTQ", Int8Recipe(float_ffn_out=True, gptq=True)),
}
"""The named recipes ``benchmarks/int8_fidelity.py`` measures (docs/int8-rotation.md has the figures)."""


def quantize_encoder(
    encoder: nn.Module,
    calibrate: Callable[[], object],
    recipe: Int8Recipe,
    *,
    bf16: bool,
    gptq_batches: Sequence[tuple[torch.Tensor, torch.Tensor]] = (),
    gptq_codes: MutableMapping[str, torch.Tensor] | None = None,
    emulate: bool = False,
) -> list[str]:
    """Swap the encoder's linears for ``Int8Linear`` layers as ``recipe`` says; ``calibrate()`` drives the float
    encoder over fixed texts for the smoothing factors. With ``recipe.gptq`` the weights' int8 codes come from
    ``gptq_codes`` (by layer name) where it has them all; otherwise ``gptq_batches`` (``(ids, mask)``) drive a
    round-to-nearest int8 encoder for GPTQ's statistics, every layer is rebuilt with GPTQ's codes, and those codes
    are added to ``gptq_codes`` (for the caller to cache). Codes that do not fit raise ``StaleGptqCodes``. The
    names quantised."""
    names = [name for name, module in encoder.named_modules() if isinstance(module, nn.Linear)]
    widths = {name: module.in_features for name, module in encoder.named_modules() if isinstance(module, nn.Linear)}
    rotations = {
        n: HadamardRotation(widths[n], mix=recipe.mix, seed=None if recipe.seed is None else recipe.seed * 1000 + i)
        for i, n in enumerate(names)
        if linear_kind(n) in recipe.rotate
    }
    smoothed = [n for n in names if linear_kind(n) in recipe.smooth]
    act_max = activation_maxima(encoder, calibrate, smoothed, rotations=rotations) if smoothed else {}
    originals = {name: m for name, m in encoder.named_modules() if isinstance(m, nn.Linear)}
    skip = is_ffn_output if recipe.float_ffn_out else lambda _name: False
    codes = gptq_codes if gptq_codes is not None else {}

    def quantize(rounding: Callable[[str, torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> list[str]:
        return quantize_linears(
            encoder,
            skip=skip,
            act_max=act_max,
            alpha=recipe.alpha,
            outliers=recipe.outliers,
            rotations=rotations,
            act={n: recipe.act for n in names if linear_kind(n) in recipe.tuned},
            rounding=rounding,
            emulate=emulate,
        )

    def cached(name: str, weight: torch.Tensor, _scale: torch.Tensor) -> torch.Tensor:
        return check_codes(name, codes[name], weight)

    if recipe.gptq and codes and all(n in codes for n in names if not skip(n)):
        replaced = quantize(cached)
    else:
        replaced = quantize()
    if recipe.gptq and replaced and not all(n in codes for n in replaced):
        if not gptq_batches:
            raise ValueError("a GPTQ recipe needs calibration batches")
        layers = {name: m for name, m in encoder.named_modules() if isinstance(m, Int8Linear)}
        hessians = collect_hessians(encoder, layers, gptq_batches, lambda m, x: m.input_rows(x))  # type: ignore[operator]
        for name in replaced:  # the float layers back, to be quantised again from their own weights
            parent, _, child = name.rpartition(".")
            setattr(encoder.get_submodule(parent), child, originals[name])

        def gptq(name: str, weight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
            codes[name] = gptq_quantize(weight, hessians[name], scale)
            return codes[name]

        replaced = quantize(gptq)
    if recipe.float_ffn_out and bf16:
        prepack = onednn_bf16_supported()  # bit for bit the plain layer's sums, without the per-call weight reorder
        replace_linears(
            encoder, lambda name, linear: BF16Linear(linear, prepack=prepack) if is_ffn_output(name) else None
        )
    return replaced
