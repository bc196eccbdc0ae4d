"""Prepacked weights (``--prepacked-weights``): bf16 linear layers whose weights oneDNN reordered once, at load, into
its own blocked layout (what inductor's weight freezing does), with the FFN's GELU computed inside the matmul.

A plain bf16 ``nn.Linear`` on a CPU goes through oneDNN too, but hands it the (out, in) weight on every call, so each
pass pays for reordering every weight into the layout the kernel reads. Reordered once, a pass skips that; the
GELU, as a post-op of the FFN's first matmul, is applied to the fp32 sums before they are rounded to bf16, instead of
as a pass of its own over a 4x-wide bf16 tensor.

On AMX CPUs the attention's output projection (hidden x hidden) is left as it was: prepacked, that square shape ran
0.60-0.76x at 640-896 rows on an AMX Xeon (1.08-1.81x at other row counts), so it would slow short-text batches. On
a Zen 5 (AVX512-BF16, no AMX) it ran 1.06-1.64x at every row count from 10 to 2048, and is prepacked too. Figures:
docs/internals.md, "Prepacked weights".
"""

from __future__ import annotations

from typing import Any, NoReturn

import torch
from torch import nn

from embedserve.engine.bert import BertEncoder, Layer, fuse_qkv


def onednn_bf16_supported() -> bool:
    """Whether this torch has oneDNN with the two operators used here (every x86 CPU build does) and oneDNN runs bf16
    on this CPU (natively, or emulated on AVX-512 without BF16; not on AVX2-only CPUs)."""
    mkldnn = torch.ops.mkldnn
    return (
        torch.backends.mkldnn.is_available()  # type: ignore[no-untyped-call]
        and hasattr(mkldnn, "_reorder_linear_weight")
        and hasattr(mkldnn, "_linear_pointwise")
        and bool(mkldnn._is_mkldnn_bf16_supported())
    )


class PrepackedLinear(nn.Module):
    """A bf16 CPU ``nn.Linear`` with its weight in oneDNN's blocked layout; ``gelu`` (``"none"``: exact, ``"tanh"``)
    fuses that activation into the matmul.

    The packed weight is an opaque oneDNN tensor, which cannot be moved, cast, copied or saved: this layer refuses
    ``.to()``, ``state_dict()``, copying and pickling with one clear error instead of failing later (``.to()`` would
    succeed and the next pass die in oneDNN; ``state_dict()`` would silently leave the layer out). Rebuild the
    backend instead."""

    def __init__(self, linear: nn.Linear, *, gelu: str | None = None) -> None:
        super().__init__()
        weight = linear.weight.detach()
        if weight.dtype != torch.bfloat16 or weight.device.type != "cpu":
            raise ValueError(f"PrepackedLinear takes a bf16 CPU layer, not {weight.dtype} on {weight.device.type}")
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.gelu = gelu
        self.packed_weight = torch.ops.mkldnn._reorder_linear_weight(weight, None)  # not a buffer: see above
        self.bias = None if linear.bias is None else linear.bias.detach().clone()
        self._post_op, self._algorithm = ("gelu", gelu) if gelu is not None else ("none", "")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        post_op, algorithm = self._post_op, self._algorithm
        out = torch.ops.mkldnn._linear_pointwise(rows, self.packed_weight, self.bias, post_op, [], algorithm)
        return out.view(*x.shape[:-1], self.out_features)  # type: ignore[no-any-return]

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, gelu={self.gelu}"

    def _refuse(self, what: str) -> NoReturn:
        raise RuntimeError(f"a PrepackedLinear cannot be {what}: its weight is packed for oneDNN; rebuild the backend")

    def _apply(self, fn: Any, recurse: bool = True) -> NoReturn:  # .to(), .float(), .cuda(), ...
        self._refuse("moved or cast")

    def _save_to_state_dict(self, destination: Any, prefix: str, keep_vars: bool) -> NoReturn:
        self._refuse("saved")

    def __reduce_ex__(self, protocol: Any) -> NoReturn:  # copy.deepcopy and pickle
        self._refuse("copied or pickled")


def prepack_linears(encoder: BertEncoder, *, attention_output: bool) -> list[str]:
    """Fuse query, key and value into one projection (prepacked, 1024 x 3072 ran 1.06-1.66x faster than unpacked at
    every row count measured) and prepack it, the FFN's first matmul with its GELU, and its second; the attention's
    output projection too where ``attention_output`` (not on AMX: see the module's docstring), else it stays a plain
    ``nn.Linear``. The encoder must be bf16 on the CPU. Returns the names of the layers prepacked."""
    fuse_qkv(encoder)
    prepacked: list[str] = []
    for name, layer in encoder.named_modules():
        if not isinstance(layer, Layer):
            continue
        attention = layer.attention.self
        intermediate = layer.intermediate
        attention.qkv = PrepackedLinear(_linear(attention.qkv))
        intermediate.fuse_activation(PrepackedLinear(_linear(intermediate.dense), gelu=intermediate.approximate))
        layer.output.dense = PrepackedLinear(_linear(layer.output.dense))
        prepacked += [f"{name}.attention.self.qkv", f"{name}.intermediate.dense", f"{name}.output.dense"]
        if attention_output:
            layer.attention.output.dense = PrepackedLinear(_linear(layer.attention.output.dense))
            prepacked.append(f"{name}.attention.output.dense")
    return prepacked


def _linear(module: nn.Module | None) -> nn.Linear:
    if not isinstance(module, nn.Linear):
        raise ValueError(f"prepack_linears takes projections that are still nn.Linear, not {type(module).__name__}")
    return module
