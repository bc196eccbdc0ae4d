"""The Hadamard rotation of int8 inputs changes nothing in exact arithmetic: the fast transform is the orthogonal
matrix it claims, a rotated-and-folded linear layer is the original one, and the emulated int8 layer (any CPU) is
the W8A8 arithmetic on the rotated operands, with per-token or per-group, clipped or unclipped activation scales.
None of this needs VNNI."""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest
import torch
from torch import nn

from embedserve.engine.hadamard import HadamardRotation, fold_rotation, fwht, paley_hadamard, random_signs
from embedserve.engine.int8_recipe import KINDS, RECIPES, Int8Recipe, linear_kind, quantize_encoder
from embedserve.engine.quant import PER_TOKEN, ActScales, Int8Linear, _quantize_rows
from tests.cpu_features import NEEDS_FAST_INT8


def sylvester(n: int) -> torch.Tensor:
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


@pytest.mark.parametrize("n", [1, 2, 8, 64, 1024, 4096])
def test_fwht_is_the_sylvester_hadamard_product(n: int) -> None:
    x = torch.randn(5, n, dtype=torch.float64, generator=torch.Generator().manual_seed(n))
    torch.testing.assert_close(fwht(x), x @ sylvester(n), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n", [1, 2, 8, 128, 1024, 4096])
def test_rotation_of_a_power_of_two_width_is_sylvesters_matrix(n: int) -> None:
    """Served as two small products (H_a X H_b), it is still exactly Sylvester's H_n / sqrt(n), as ``fwht`` is."""
    x = torch.randn(3, 2, n, dtype=torch.float64, generator=torch.Generator().manual_seed(n))
    torch.testing.assert_close(HadamardRotation(n)(x), x @ sylvester(n) / n**0.5, rtol=1e-12, atol=1e-12)


def test_fwht_refuses_a_width_that_is_not_a_power_of_two() -> None:
    with pytest.raises(ValueError, match="power-of-two"):
        fwht(torch.zeros(2, 12))


@pytest.mark.parametrize("q", [11, 19])
def test_paley_matrix_is_hadamard(q: int) -> None:
    h = paley_hadamard(q)
    assert set(torch.unique(h).tolist()) == {-1.0, 1.0}
    torch.testing.assert_close(h @ h.t(), (q + 1) * torch.eye(q + 1))


@pytest.mark.parametrize(
    ("n", "mix", "dense"),
    [(1024, True, False), (4096, True, False), (384, True, True), (1536, True, True), (1536, False, False),
     (80, True, True), (72, True, False)],
)  # fmt: skip
def test_rotation_is_orthogonal_and_mixes_as_documented(n: int, mix: bool, dense: bool) -> None:
    rotation = HadamardRotation(n, mix=mix)
    t = rotation.matrix().double()
    torch.testing.assert_close(t @ t.t(), torch.eye(n, dtype=torch.float64), rtol=0, atol=1e-6)
    # with a dense factor every output mixes every input; block-diagonal mixes within power-of-two blocks only
    nonzero = (t.abs() > 1e-9).sum(dim=1)
    assert bool((nonzero == (n if dense else n // rotation.blocks)).all())
    x = torch.randn(3, 2, n)
    torch.testing.assert_close(rotation(x), x @ t.float().t(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("n_in", "mix"), [(1024, True), (1536, True), (1536, False), (384, True)])
def test_rotated_and_folded_linear_is_the_original_layer(n_in: int, mix: bool) -> None:
    gen = torch.Generator().manual_seed(n_in)
    linear = nn.Linear(n_in, 48)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(48, n_in, generator=gen) * 0.05)
    x = torch.randn(7, n_in, generator=gen)
    x[:, 3] *= 50.0  # an outlier channel
    rotation = HadamardRotation(n_in, mix=mix)
    folded = fold_rotation(linear.weight.detach(), rotation)
    with torch.no_grad():
        torch.testing.assert_close(rotation(x) @ folded.t() + linear.bias, linear(x), rtol=1e-4, atol=1e-4)


def w8a8(linear: nn.Linear, x: torch.Tensor, rotation: HadamardRotation | None) -> torch.Tensor:
    """Per-token x per-channel int8 of the (rotated) operands, spelled out in float64."""
    w = linear.weight.detach().float()
    if rotation is not None:
        w, x = fold_rotation(w, rotation), rotation(x)
    qw, sw = _quantize_rows(w)
    qx, sx = _quantize_rows(x.float())
    return ((qx.double() @ qw.double().t()).float() * sw.t()) * sx + linear.bias.detach()


@pytest.mark.parametrize("rotate", [False, True])
def test_emulated_int8_layer_is_the_w8a8_arithmetic(rotate: bool) -> None:
    gen = torch.Generator().manual_seed(7)
    linear = nn.Linear(1536, 64)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(64, 1536, generator=gen) * 0.05)
    x = torch.randn(9, 1536, generator=gen)
    rotation = HadamardRotation(1536) if rotate else None
    layer = Int8Linear(linear, rotation=rotation, emulate=True)
    with torch.inference_mode():
        torch.testing.assert_close(layer(x), w8a8(linear, x, rotation), rtol=1e-4, atol=1e-4)


def test_rotation_makes_int8_accurate_on_an_outlier_channel() -> None:
    gen = torch.Generator().manual_seed(3)
    linear = nn.Linear(1024, 256)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(256, 1024, generator=gen) * 0.03)
    x = torch.randn(64, 1024, generator=gen)
    x[:, 11] *= 300.0  # one channel dwarfs the rest, as GELU outputs of BERT's FFN do

    def error(layer: nn.Module) -> float:
        with torch.inference_mode():
            exact = linear(x)
            return float((layer(x) - exact).norm() / exact.norm())

    plain = error(Int8Linear(linear, emulate=True))
    rotated = error(Int8Linear(linear, rotation=HadamardRotation(1024), emulate=True))
    assert rotated < plain / 4


class TinyEncoder(nn.Module):
    """Four linears named like a BERT layer's, in a chain."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.ModuleDict(
            {
                "attention": nn.ModuleDict({"self": nn.ModuleDict({"qkv": nn.Linear(32, 96)}),
                                            "output": nn.ModuleDict({"dense": nn.Linear(32, 32)})}),
                "intermediate": nn.ModuleDict({"dense": nn.Linear(32, 128)}),
                "output": nn.ModuleDict({"dense": nn.Linear(128, 32)}),
            }
        )  # fmt: skip

    def forward(self, x: torch.Tensor, _mask: torch.Tensor | None = None) -> torch.Tensor:
        layer: Any = self.layer
        h = layer["attention"]["self"]["qkv"](x)[..., :32]
        h = layer["attention"]["output"]["dense"](h)
        return layer["output"]["dense"](torch.relu(layer["intermediate"]["dense"](h)))  # type: ignore[no-any-return]


def test_linear_kinds_cover_a_bert_layer() -> None:
    names = [n for n, m in TinyEncoder().named_modules() if isinstance(m, nn.Linear)]
    assert sorted(linear_kind(f"encoder.{n}") for n in names) == sorted(KINDS)


@pytest.mark.parametrize("recipe", [Int8Recipe(rotate=KINDS, smooth=frozenset(), outliers=0), Int8Recipe(rotate=KINDS)])
def test_a_recipe_rotates_every_linear_it_names(recipe: Int8Recipe) -> None:
    encoder = TinyEncoder()
    x = torch.randn(20, 32)
    with torch.inference_mode():
        exact = encoder(x)
    replaced = quantize_encoder(encoder, lambda: encoder(x), recipe, bf16=False, emulate=True)
    assert len(replaced) == 4
    layers = [m for m in encoder.modules() if isinstance(m, Int8Linear)]
    assert all(layer.rotation is not None for layer in layers)
    with torch.inference_mode():
        cos = torch.nn.functional.cosine_similarity(encoder(x), exact, dim=1)
    assert float(cos.min()) > 0.99


@NEEDS_FAST_INT8
@pytest.mark.parametrize("rotate", [False, True])
def test_emulation_computes_what_the_served_kernel_does(rotate: bool) -> None:
    gen = torch.Generator().manual_seed(11)
    linear = nn.Linear(1536, 64)
    x = torch.randn(33, 1536, generator=gen)
    rotation = HadamardRotation(1536) if rotate else None
    served = Int8Linear(linear, rotation=rotation)
    emulated = Int8Linear(linear, rotation=rotation, emulate=True)
    with torch.inference_mode():
        torch.testing.assert_close(served(x), emulated(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("n", "mix"), [(1024, True), (1536, True), (1536, False)])
def test_a_randomised_hadamard_is_orthogonal_and_the_folded_layer_is_the_original(n: int, mix: bool) -> None:
    rotation = HadamardRotation(n, mix=mix, seed=5)
    t = rotation.matrix().double()
    torch.testing.assert_close(t @ t.t(), torch.eye(n, dtype=torch.float64), rtol=0, atol=1e-6)
    signs = random_signs(n, 5).double()
    torch.testing.assert_close(t, HadamardRotation(n, mix=mix).matrix().double() * signs, rtol=0, atol=1e-7)
    gen = torch.Generator().manual_seed(n)
    linear = nn.Linear(n, 32)
    x = torch.randn(6, n, generator=gen)
    x[:, 3] *= 50.0
    folded = fold_rotation(linear.weight.detach(), rotation)
    with torch.no_grad():
        torch.testing.assert_close(rotation(x) @ folded.t() + linear.bias, linear(x), rtol=1e-4, atol=1e-4)


def test_random_signs_depend_on_the_seed_only() -> None:
    a = random_signs(1536, 1)
    assert set(torch.unique(a).tolist()) == {-1.0, 1.0}
    assert torch.equal(a, random_signs(1536, 1))
    assert not torch.equal(a, random_signs(1536, 2))


def fake_quant(x: torch.Tensor, clip: float) -> torch.Tensor:
    """Symmetric int8 of each row, scale ``clip * max|x| / 127``, values beyond it saturating: dequantised, fp64."""
    scale = x.abs().amax(dim=1, keepdim=True) * clip / 127.0
    return torch.round(x / scale).clamp(-127, 127).double() * scale.double()


@pytest.mark.parametrize(("group", "clip"), [(0, 0.9), (128, 1.0), (128, 0.9), (32, 1.0), (1536, 1.0)])
def test_grouped_and_clipped_activation_scales_are_the_arithmetic_they_claim(group: int, clip: float) -> None:
    gen = torch.Generator().manual_seed(group + 1)
    torch.manual_seed(group + 1)
    linear = nn.Linear(1536, 48)
    x = torch.randn(9, 1536, generator=gen)
    x[:, 7] *= 30.0
    # Scales and rounding in fp32, as the layer takes them (in fp64 a value near a rounding tie can land one step
    # away); the products in fp64.
    w = linear.weight.detach()
    w_scale = w.abs().amax(dim=1, keepdim=True) / 127.0
    w_deq = torch.round(w / w_scale).double() * w_scale.double()
    size = group or 1536
    x_deq = fake_quant(x.reshape(-1, size), clip).reshape(9, 1536)
    expected = (x_deq @ w_deq.t() + linear.bias.detach().double()).float()
    layer = Int8Linear(linear, act=ActScales(group=group, clip=clip), emulate=True)
    with torch.inference_mode():
        torch.testing.assert_close(layer(x), expected, rtol=1e-4, atol=1e-4)


def test_one_group_as_wide_as_the_row_is_the_per_token_layer() -> None:
    linear = nn.Linear(384, 40)
    x = torch.randn(11, 384, generator=torch.Generator().manual_seed(2))
    rotation = HadamardRotation(384, seed=1)
    grouped = Int8Linear(linear, rotation=rotation, act=ActScales(group=384), emulate=True)
    per_token = Int8Linear(linear, rotation=rotation, emulate=True)
    with torch.inference_mode():
        torch.testing.assert_close(grouped(x), per_token(x), rtol=1e-6, atol=1e-6)


def test_per_group_scales_are_refused_where_no_kernel_or_no_even_split() -> None:
    with pytest.raises(ValueError, match="per-group"):
        Int8Linear(nn.Linear(384, 8), act=ActScales(group=128))
    with pytest.raises(ValueError, match="per-group"):
        Int8Linear(nn.Linear(384, 8), act=ActScales(group=100), emulate=True)


def test_a_recipe_tunes_the_activation_scales_of_the_kinds_it_names_only() -> None:
    encoder = TinyEncoder()
    x = torch.randn(20, 32)
    recipe = Int8Recipe(rotate=frozenset({"ffn_out"}), seed=3, act=ActScales(group=32, clip=0.95))
    quantize_encoder(encoder, lambda: encoder(x), recipe, bf16=False, emulate=True)
    layers = {n: m for n, m in encoder.named_modules() if isinstance(m, Int8Linear)}
    assert layers["layer.output.dense"].act == ActScales(group=32, clip=0.95)
    assert layers["layer.output.dense"].rotation is not None
    assert all(m.act == PER_TOKEN and m.rotation is None for n, m in layers.items() if n != "layer.output.dense")


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_named_recipe_builds_on_a_tiny_encoder(name: str) -> None:
    encoder = TinyEncoder()
    x = torch.randn(8, 32)
    batches = [(torch.randn(2, 4, 32), torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]]))]  # GPTQ's (ids, mask) stand-ins
    assert quantize_encoder(
        encoder, lambda: encoder(x), RECIPES[name][1], bf16=False, gptq_batches=batches, emulate=True
    )


def test_a_gptq_recipe_keeps_the_layers_and_rounds_weights_closer_on_its_calibration() -> None:
    torch.manual_seed(0)
    x = torch.randn(64, 32)
    batches = [(x.reshape(8, 8, 32), torch.ones(8, 8, dtype=torch.long))]
    errors = []
    for gptq in (False, True):
        torch.manual_seed(1)  # the same float weights both times
        encoder = TinyEncoder()
        with torch.inference_mode():
            exact = encoder(x)
        recipe = Int8Recipe(rotate=frozenset({"ffn_out"}), gptq=gptq)
        replaced = quantize_encoder(
            encoder, partial(encoder, x), recipe, bf16=False, gptq_batches=batches, emulate=True
        )
        assert len(replaced) == 4 and sum(isinstance(m, Int8Linear) for m in encoder.modules()) == 4
        with torch.inference_mode():
            errors.append(float((encoder(x) - exact).norm() / exact.norm()))
    assert errors[1] < errors[0]


def test_a_gptq_recipe_with_every_layer_s_codes_at_hand_uses_them_and_needs_no_calibration_batches() -> None:
    x = torch.randn(16, 32)
    torch.manual_seed(3)
    first = TinyEncoder()
    torch.manual_seed(3)
    second = TinyEncoder()
    codes: dict[str, torch.Tensor] = {}
    batches = [(x.reshape(2, 8, 32), torch.ones(2, 8, dtype=torch.long))]
    recipe = Int8Recipe(rotate=frozenset({"ffn_out"}), gptq=True)
    quantize_encoder(first, partial(first, x), recipe, bf16=False, gptq_batches=batches, gptq_codes=codes, emulate=True)
    assert len(codes) == 4
    stored = {name: code.clone() for name, code in codes.items()}
    quantize_encoder(second, partial(second, x), recipe, bf16=False, gptq_codes=codes, emulate=True)
    assert all(torch.equal(codes[name], stored[name]) for name in stored)
    with torch.inference_mode():
        assert torch.equal(first(x), second(x))


def test_a_gptq_recipe_without_calibration_batches_is_refused() -> None:
    encoder = TinyEncoder()
    x = torch.randn(8, 32)
    with pytest.raises(ValueError, match="calibration"):
        quantize_encoder(encoder, lambda: encoder(x), Int8Recipe(gptq=True), bf16=False, emulate=True)
