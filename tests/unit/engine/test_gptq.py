"""GPTQ weight rounding (engine/gptq.py): the arithmetic it claims, and the calibration statistics it is fed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from embedserve.engine.gptq import StaleGptqCodes, calibration_texts, check_codes, collect_hessians, gptq_quantize


def rtn(weight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return torch.clamp(torch.round(weight / scale[:, None]), -127, 127)


def per_row_scale(weight: torch.Tensor) -> torch.Tensor:
    return weight.abs().amax(dim=1) / 127


def correlated_inputs(rows: int, width: int, *, seed: int) -> torch.Tensor:
    """Activations like a layer's: a few directions carry most of the energy, with a little noise on every channel."""
    gen = torch.Generator().manual_seed(seed)
    basis = torch.randn(8, width, generator=torch.Generator().manual_seed(99))
    return torch.randn(rows, 8, generator=gen) @ basis * 3 + 0.1 * torch.randn(rows, width, generator=gen)


def test_with_uncorrelated_inputs_gptq_is_rounding_to_nearest() -> None:
    weight = torch.randn(24, 64)
    scale = per_row_scale(weight)
    codes = gptq_quantize(weight, torch.eye(64) * 5.0, scale)
    assert codes.dtype == torch.int8
    assert torch.equal(codes.float(), rtn(weight, scale))


def test_gptq_moves_the_output_less_than_rounding_to_nearest_on_unseen_inputs() -> None:
    weight = torch.randn(48, 128)
    scale = per_row_scale(weight)
    calib = correlated_inputs(2000, 128, seed=0)
    held_out = correlated_inputs(500, 128, seed=1)
    codes = gptq_quantize(weight, calib.t() @ calib, scale)

    def error(q: torch.Tensor) -> float:
        return float(((weight - q * scale[:, None]) @ held_out.t()).norm() / (weight @ held_out.t()).norm())

    assert error(codes.float()) < 0.5 * error(rtn(weight, scale))
    assert codes.abs().max() <= 127


def test_a_column_no_input_reaches_gets_zero_codes() -> None:
    weight = torch.randn(16, 32)
    x = correlated_inputs(400, 32, seed=2)
    x[:, [3, 17]] = 0.0  # outlier channels: the layer computes them in fp32, its int8 weight there is unused
    codes = gptq_quantize(weight, x.t() @ x, per_row_scale(weight))
    assert not codes[:, [3, 17]].any()
    assert codes[:, 0].any()


class PackingEncoder(nn.Module):
    """One linear fed each batch's real tokens only (``packed``) or every padded position, as BertEncoder may."""

    def __init__(self, *, packed: bool) -> None:
        super().__init__()
        self.dense = nn.Linear(4, 4)
        self.packed = packed

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, 4)
        if self.packed:
            rows = rows[mask.reshape(-1).bool()]
        return self.dense(rows)  # type: ignore[no-any-return]


@pytest.mark.parametrize("packed", [False, True])
def test_each_text_weighs_the_same_however_many_tokens_it_has(packed: bool) -> None:
    x = torch.randn(2, 3, 4)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])  # a three-token text and a one-token text
    encoder = PackingEncoder(packed=packed)
    sums = collect_hessians(encoder, {"dense": encoder.dense}, [(x, mask)], lambda _m, t: t.reshape(-1, 4))
    long_text, short_text = x[0], x[1, :1]
    expected = long_text.t() @ long_text / 3 + short_text.t() @ short_text
    torch.testing.assert_close(sums["dense"], expected)


def test_the_calibration_set_ships_with_prose_and_one_word_texts() -> None:
    texts = calibration_texts()
    assert len(texts) >= 400
    assert "" in texts
    assert sum(len(t.split()) <= 2 for t in texts) >= 20
    assert max(len(t.split()) for t in texts) >= 40


def test_the_cache_key_is_the_same_in_every_process(minilm_model_dir: Path) -> None:
    """The recipe's sets print in hash-seed order; the key must not follow them, or no restart would find its codes."""
    script = (
        "import sys; from pathlib import Path; from embedserve.engine.int8_build import INT8_RECIPE;"
        "from embedserve.engine.gptq import gptq_codes_file; from embedserve.engine.loading import load_model;"
        "from embedserve.settings import EngineSettings;"
        f"m = load_model(EngineSettings(model={str(minilm_model_dir)!r}));"
        "print(gptq_codes_file(m, INT8_RECIPE, Path('/c'), calibration='x'))"
    )
    keys = {
        subprocess.run(
            [sys.executable, "-c", script], env={**os.environ, "PYTHONHASHSEED": seed}, capture_output=True, text=True,
            check=True,
        ).stdout
        for seed in ("1", "2", "3")
    }  # fmt: skip
    assert len(keys) == 1 and "gptq_codes.safetensors" in keys.pop()


def test_cached_codes_are_used_only_for_the_layer_they_were_made_for() -> None:
    weight = torch.randn(8, 16)
    weight[:, 5] = 0.0  # an outlier channel this start
    codes = rtn(weight, per_row_scale(weight)).to(torch.int8)
    assert check_codes("l", codes, weight) is codes
    with pytest.raises(StaleGptqCodes, match="codes"):
        check_codes("l", codes[:, :15], weight[:, :15].t())
    other = weight.clone()
    other[:, 5], other[:, 9] = 1.0, 0.0  # another start picked channel 9 as the outlier instead
    with pytest.raises(StaleGptqCodes, match="outlier"):
        check_codes("l", codes, other)
