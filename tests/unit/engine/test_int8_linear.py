"""Int8Linear (the torch backend's int8 layer) computes the W8A8 product it promises: per-token activation scales,
per-output-channel weight scales, smoothing, and outlier channels in fp32; on any row count and leading shape."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from embedserve.engine.quant import Int8Linear, _quantize_rows
from tests.cpu_features import NEEDS_FAST_INT8

# Without VNNI/AMX, oneDNN's u8s8 kernel (AVX2 vpmaddubsw) saturates its int16 pair sums, so the product is not the
# W8A8 arithmetic (seen on a Zen 3: errors up to 4.4 on outputs of ~1); the torch backend refuses int8 there too.
pytestmark = NEEDS_FAST_INT8


def reference(
    linear: nn.Linear, x: torch.Tensor, smooth: torch.Tensor | None, outliers: torch.Tensor | None
) -> torch.Tensor:
    """The same arithmetic spelled out in fp32: fake-quantised operands, then a float matmul."""
    w = linear.weight.detach().float()
    rows = x.reshape(-1, x.shape[-1]).float()
    out = linear.bias.detach().float().expand(rows.shape[0], -1).clone()
    factor = torch.ones(w.shape[1]) if smooth is None else 1.0 / smooth
    w_s = w if smooth is None else w * smooth[None, :]
    if outliers is not None:
        out += rows[:, outliers] @ w[:, outliers].t()
        factor = factor.clone()
        factor[outliers] = 0.0
        w_s = w_s.clone()
        w_s[:, outliers] = 0.0
    qw, sw = _quantize_rows(w_s)
    qx, sx = _quantize_rows(rows * factor)
    out += (qx.float() * sx) @ (qw.float() * sw).t()
    return out.reshape(*x.shape[:-1], w.shape[0])


@pytest.mark.parametrize("rows", [1, 7, 300])
@pytest.mark.parametrize("variant", ["plain", "smoothed", "outliers"])
def test_matches_the_w8a8_arithmetic_and_stays_close_to_fp32(rows: int, variant: str) -> None:
    gen = torch.Generator().manual_seed(rows)
    linear = nn.Linear(96, 80)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(80, 96, generator=gen) * 0.05)
        linear.bias.copy_(torch.randn(80, generator=gen))
    x = torch.randn(rows, 96, generator=gen)
    x[:, 5] *= 40.0  # an outlier channel, as BERT has
    smooth = torch.rand(96, generator=gen) + 0.5 if variant != "plain" else None
    outliers = torch.tensor([5, 17]) if variant == "outliers" else None
    layer = Int8Linear(linear, smooth, outliers)
    with torch.inference_mode():
        got = layer(x)
        exact = linear(x)
    assert got.shape == exact.shape and got.dtype == torch.float32
    torch.testing.assert_close(got, reference(linear, x, smooth, outliers), rtol=1e-4, atol=1e-4)
    cos = torch.nn.functional.cosine_similarity(got - linear.bias, exact - linear.bias, dim=1)
    assert cos.min() > 0.99


def test_keeps_leading_dimensions_and_dtype() -> None:
    linear = nn.Linear(32, 16)
    layer = Int8Linear(linear)
    x = torch.randn(2, 5, 32)
    with torch.inference_mode():
        assert layer(x).shape == (2, 5, 16)
        assert layer(x.to(torch.bfloat16)).dtype == torch.bfloat16


def test_all_zero_rows_give_the_bias() -> None:
    linear = nn.Linear(32, 16)
    layer = Int8Linear(linear)
    with torch.inference_mode():
        out = layer(torch.zeros(3, 32))
    torch.testing.assert_close(out, linear.bias.detach().expand(3, -1))
