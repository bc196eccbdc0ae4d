"""Which dtype the torch backend runs in, and the clear errors for dtypes a device cannot run well."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from embedserve.engine import Engine, EngineSettings
from embedserve.engine.backends.torch import resolve_dtype
from embedserve.errors import InvalidRequestError

CPU = torch.device("cpu")


PROBES = ("_is_vnni_supported", "_is_amx_tile_supported", "_is_avx512_bf16_supported")


def test_the_cpu_probes_exist_in_this_torch() -> None:
    # A renamed probe would make the backend treat every CPU as lacking the feature.
    assert all(callable(getattr(torch.cpu, probe, None)) for probe in PROBES)


def cpu_features(monkeypatch: pytest.MonkeyPatch, **flags: bool) -> None:
    for name in PROBES:
        value = flags.get(name, False)
        monkeypatch.setattr(torch.cpu, name, lambda value=value: value, raising=False)


def test_int8_is_refused_where_the_cpu_has_no_int8_matmul_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu_features(monkeypatch)  # AVX2 only: torch._int_mm measured 0.5-2.4 GOP/s against fp32's 39-71 GFLOP/s
    with pytest.raises(InvalidRequestError, match="AVX512-VNNI or AMX"):
        resolve_dtype("int8", CPU)


@pytest.mark.parametrize("flag", ["_is_vnni_supported", "_is_amx_tile_supported"])
def test_int8_runs_on_cpus_with_vnni_or_amx(monkeypatch: pytest.MonkeyPatch, flag: str) -> None:
    cpu_features(monkeypatch, **{flag: True})
    assert resolve_dtype("int8", CPU) == torch.int8


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({"_is_amx_tile_supported": True, "_is_vnni_supported": True}, torch.bfloat16),  # Sapphire Rapids on
        ({"_is_avx512_bf16_supported": True, "_is_vnni_supported": True}, torch.bfloat16),  # Zen 4, Zen 5
        ({"_is_vnni_supported": True}, torch.int8),  # Cascade Lake, Ice Lake: bf16 emulated, int8 ~2x fp32
        ({}, torch.float32),  # AVX2 or AVX-512 without VNNI
    ],
)
def test_auto_is_bf16_where_native_then_int8_where_vnni_then_fp32(
    monkeypatch: pytest.MonkeyPatch, flags: dict[str, bool], expected: torch.dtype
) -> None:
    cpu_features(monkeypatch, **flags)
    assert resolve_dtype("auto", CPU) == expected


def test_float16_on_cpu_and_int8_on_cuda_are_refused() -> None:
    with pytest.raises(InvalidRequestError, match="float16 is for CUDA"):
        resolve_dtype("float16", CPU)
    with pytest.raises(InvalidRequestError, match="CPU only"):
        resolve_dtype("int8", torch.device("cuda"))


def test_the_engine_refuses_int8_before_it_looks_for_the_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cpu_features(monkeypatch)
    engine = Engine(EngineSettings(model=str(tmp_path / "not-downloaded-yet"), dtype="int8"))
    with pytest.raises(InvalidRequestError, match="AVX512-VNNI or AMX"):  # not "model not found": nothing fetched
        engine.embed_texts(["a"])
