"""The fused rotate-and-quantise kernel computes what the torch path does (``HadamardRotation``, the outlier gather,
smoothing, ``_quantize_rows_shifted_``) up to fp32 rounding order, and Int8Linear serves the same outputs through it.
The kernel's tests need a C++ compiler only; the layer's need oneDNN's int8 kernel too."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils import cpp_extension

from embedserve.engine import fused, quant
from embedserve.engine.fused import ENV_SWITCH, fused_available, rotate_quantize
from embedserve.engine.hadamard import HadamardRotation
from embedserve.engine.quant import ActScales, Int8Linear, _quantize_rows_shifted_
from tests.cpu_features import NEEDS_FAST_INT8


@pytest.fixture
def kernel() -> None:
    if not fused_available():
        pytest.skip(f"fused kernel not built here: no compiler or ninja (logged), or {ENV_SWITCH}=0")


def torch_path(
    x: torch.Tensor,
    rotation: HadamardRotation | None,
    factor: torch.Tensor | None,
    outliers: torch.Tensor | None,
    clip: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    rows = rotation(x) if rotation is not None else x
    cols = None if outliers is None else rows[:, outliers]
    rows = rows * factor if factor is not None else rows.clone()
    q, scale = _quantize_rows_shifted_(rows, clip)
    return q, scale, cols


def assert_matches_torch_path(
    x: torch.Tensor,
    rotation: HadamardRotation | None,
    *,
    factor: torch.Tensor | None = None,
    outliers: torch.Tensor | None = None,
    clip: float = 1.0,
) -> None:
    want_q, want_scale, want_cols = torch_path(x, rotation, factor, outliers, clip)
    q, scale, cols = rotate_quantize(x, rotation, act_factor=factor, outliers=outliers, clip=clip)
    assert q.dtype == torch.uint8 and q.shape == x.shape and scale.shape == (x.shape[0], 1)
    torch.testing.assert_close(scale, want_scale, rtol=1e-5, atol=0)
    # a value on a rounding boundary may land one step either side: rare, and never further
    off = (q.int() - want_q.int()).abs()
    assert int(off.max()) <= 1
    assert int((off > 0).sum()) <= 1 + 0.001 * q.numel()
    dequant, want = (q.float() - 128) * scale, (want_q.float() - 128) * want_scale
    assert bool(((dequant - want).abs() <= want_scale * 1.0001).all())
    if outliers is None:
        assert cols is None
    else:
        assert cols is not None and want_cols is not None
        torch.testing.assert_close(cols, want_cols, rtol=1e-5, atol=1e-5)


ROTATIONS = {
    "4096, power of two": HadamardRotation(4096),
    "1536 = 12 x 128, Paley dense": HadamardRotation(1536),
    "1536 = 3 x 512, block-diagonal": HadamardRotation(1536, mix=False),
    "72 = 9 x 8, narrow blocks": HadamardRotation(72, mix=False),
    "1024, seeded signs": HadamardRotation(1024, seed=7),
}


@pytest.mark.usefixtures("kernel")
@pytest.mark.parametrize("name", ROTATIONS)
@pytest.mark.parametrize("rows", [1, 67])
@pytest.mark.parametrize("smoothed", [False, True])
def test_matches_rotation_then_quantisation(name: str, rows: int, smoothed: bool) -> None:
    rotation = ROTATIONS[name]
    n = rotation.n
    gen = torch.Generator().manual_seed(n + rows)
    x = torch.randn(rows, n, generator=gen)
    x[:, 5] *= 40.0  # an outlier channel, which the rotation spreads
    if not smoothed:
        assert_matches_torch_path(x, rotation)
        return
    factor = torch.rand(n, generator=gen) + 0.5
    outliers = torch.tensor([0, 5, n - 1])
    factor[outliers] = 0.0
    assert_matches_torch_path(x, rotation, factor=factor, outliers=outliers)


@pytest.mark.usefixtures("kernel")
@pytest.mark.parametrize("name", ["4096, power of two", "1536 = 12 x 128, Paley dense"])
def test_clipped_scales_saturate_as_the_torch_path_does(name: str) -> None:
    rotation = ROTATIONS[name]
    x = torch.randn(33, rotation.n, generator=torch.Generator().manual_seed(1))
    assert_matches_torch_path(x, rotation, clip=0.9)


@pytest.mark.usefixtures("kernel")
@pytest.mark.parametrize("clip", [1.0, 0.9])
def test_a_row_of_zeros_quantises_to_the_zero_point(clip: float) -> None:
    x = torch.zeros(3, 1536)
    x[1] = torch.randn(1536)
    q, scale, _ = rotate_quantize(x, ROTATIONS["1536 = 12 x 128, Paley dense"], clip=clip)
    assert bool((q[[0, 2]] == 128).all())
    torch.testing.assert_close(scale[[0, 2]], torch.full((2, 1), 1e-8 * clip / 127))
    assert_matches_torch_path(x, ROTATIONS["1536 = 12 x 128, Paley dense"], clip=clip)


@pytest.mark.usefixtures("kernel")
@pytest.mark.parametrize("contiguous", [True, False])
def test_leaves_its_input_unchanged(contiguous: bool) -> None:
    x = torch.randn(8, 4096) if contiguous else torch.randn(4096, 8).t()
    before = x.clone()
    assert_matches_torch_path(x, ROTATIONS["4096, power of two"], factor=torch.full((4096,), 0.5))
    torch.testing.assert_close(x, before, rtol=0, atol=0)


def test_switched_off_by_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_SWITCH, "0")
    assert not fused_available()


@pytest.fixture
def fresh_extension() -> Iterator[None]:
    fused._extension.cache_clear()
    yield
    fused._extension.cache_clear()


@pytest.mark.usefixtures("fresh_extension")
def test_a_failed_build_falls_back_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def no_compiler(**_: object) -> None:
        raise RuntimeError("no C++ compiler")

    monkeypatch.delenv(ENV_SWITCH, raising=False)
    monkeypatch.setattr(cpp_extension, "load", no_compiler)
    with caplog.at_level(logging.WARNING, logger=fused.__name__):
        assert not fused_available()
        assert not fused_available()
    assert [r.getMessage() for r in caplog.records] == [
        "fused int8 kernels unavailable, Int8Linear keeps the torch path: no C++ compiler"
    ]


@NEEDS_FAST_INT8
@pytest.mark.usefixtures("kernel")
@pytest.mark.parametrize(
    ("n_in", "clip", "rotate"), [(1024, 1.0, True), (1536, 1.0, True), (384, 0.9, True), (1024, 1.0, False)]
)
def test_int8_linear_serves_the_same_outputs_through_the_kernel(
    monkeypatch: pytest.MonkeyPatch, n_in: int, clip: float, rotate: bool
) -> None:
    gen = torch.Generator().manual_seed(n_in)
    linear = nn.Linear(n_in, 96)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(96, n_in, generator=gen) * 0.05)
    x = torch.randn(2, 19, n_in, generator=gen)
    x[..., 3] *= 30.0
    smooth = torch.rand(n_in, generator=gen) + 0.5
    layer = Int8Linear(
        linear,
        smooth,
        torch.tensor([3, 11]),
        rotation=HadamardRotation(n_in, seed=1) if rotate else None,
        act=ActScales(clip=clip),
    )
    calls: list[int] = []

    def counted(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return rotate_quantize(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(quant, "rotate_quantize", counted)
    with torch.inference_mode():
        got = layer(x)
        monkeypatch.setenv(ENV_SWITCH, "0")
        want = layer(x)
    assert calls == [1] and got.shape == want.shape == (2, 19, 96)
    # only a rare activation one step off changes anything: by at most a few weight-sized steps
    torch.testing.assert_close(got, want, rtol=0, atol=2e-3 * float(want.abs().max()))


@pytest.mark.usefixtures("kernel")
@pytest.mark.parametrize("seed", range(5))
def test_without_a_rotation_the_kernel_is_the_torch_path(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(300, 1024, generator=gen) * torch.rand(1024, generator=gen) * 4
    factor, outliers = torch.rand(1024, generator=gen) + 0.5, torch.tensor([5, 700])
    factor[outliers] = 0.0
    # the same scales and gathered columns exactly; a value on a rounding boundary (2 in 10^7 seen over 20 seeds)
    # may land one step away, as torch's vectorised 127 / amax can differ from a division by one ulp
    assert_matches_torch_path(x, None, factor=factor, outliers=outliers)
    _, scale, cols = rotate_quantize(x, None, act_factor=factor, outliers=outliers)
    _, want_scale, want_cols = torch_path(x, None, factor, outliers, 1.0)
    assert (
        torch.equal(scale, want_scale) and cols is not None and want_cols is not None and torch.equal(cols, want_cols)
    )


def test_a_build_lock_left_by_a_killed_build_is_removed_and_a_live_one_kept(tmp_path: Path) -> None:
    lock = tmp_path / "lock"
    lock.touch()
    fused._drop_stale_lock(tmp_path)  # another process is building right now: wait for it, as torch does
    assert lock.exists()
    os.utime(lock, (time.time() - 3600, time.time() - 3600))
    fused._drop_stale_lock(tmp_path)
    assert not lock.exists()
    fused._drop_stale_lock(tmp_path)  # no lock at all: nothing to do


def test_the_kernel_builds_under_the_cache_dir_and_falls_back_where_it_cannot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(fused, "_build_root", [])
    torch_default = Path(cpp_extension._get_build_directory("embedserve_probe", verbose=False))
    assert fused._build_directory("embedserve_probe") == torch_default  # no root: torch's folder, as before
    fused.set_build_root(tmp_path / "cache" / "kernels")
    folder = fused._build_directory("embedserve_probe")
    assert folder.parent == tmp_path / "cache" / "kernels" and folder.is_dir()
    assert folder.name.startswith("embedserve_probe-torch") and torch.__version__ in folder.name
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    fused.set_build_root(blocked)
    with caplog.at_level(logging.WARNING, logger=fused.__name__):
        assert fused._build_directory("embedserve_probe") == torch_default
    assert "using torch's extensions folder" in caplog.text
