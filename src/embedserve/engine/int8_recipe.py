"""Which int8 treatment each linear layer of the BERT encoder gets (Hadamard rotation, SmoothQuant factors, fp32
outlier channels, or none of int8 at all for the FFN down projection), and the one function that applies a recipe."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from embedserve.engine.hadamard import HadamardRotation
from embedserve.engine.quant import (
    BF16Linear,
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
    fp32 otherwise); ``mix=False`` rotates non-power-of-two widths block-diagonally instead of with ``H_12``."""

    rotate: frozenset[str] = frozenset()
    smooth: frozenset[str] = KINDS
    outliers: int = 16
    alpha: float = 0.5
    float_ffn_out: bool = False
    mix: bool = True


SMOOTHED_FLOAT_FFN_OUT = Int8Recipe(float_ffn_out=True)
"""The recipe before rotations: SmoothQuant + 16 outlier channels everywhere, the FFN down projection not in int8."""


def quantize_encoder(
    encoder: nn.Module, calibrate: Callable[[], object], recipe: Int8Recipe, *, bf16: bool, emulate: bool = False
) -> list[str]:
    """Swap the encoder's linears for ``Int8Linear`` layers as ``recipe`` says; ``calibrate()`` drives the float
    encoder over fixed texts for the smoothing factors. The names quantised."""
    names = [name for name, module in encoder.named_modules() if isinstance(module, nn.Linear)]
    widths = {name: module.in_features for name, module in encoder.named_modules() if isinstance(module, nn.Linear)}
    rotations = {n: HadamardRotation(widths[n], mix=recipe.mix) for n in names if linear_kind(n) in recipe.rotate}
    smoothed = [n for n in names if linear_kind(n) in recipe.smooth]
    act_max = activation_maxima(encoder, calibrate, smoothed, rotations=rotations) if smoothed else {}
    replaced = quantize_linears(
        encoder,
        skip=is_ffn_output if recipe.float_ffn_out else lambda _name: False,
        act_max=act_max,
        alpha=recipe.alpha,
        outliers=recipe.outliers,
        rotations=rotations,
        emulate=emulate,
    )
    if recipe.float_ffn_out and bf16:
        replace_linears(encoder, lambda name, linear: BF16Linear(linear) if is_ffn_output(name) else None)
    return replaced
