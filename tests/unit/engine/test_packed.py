"""``--onednn-packing``: bf16 linears with weights reordered once for oneDNN and GELU fused into the FFN's first
matmul (engine/packed.py). Each packed layer must compute what the plain layer computes, to bf16 rounding; the
whole model must give the same vectors; and the flag must be refused, in one line, where it cannot apply."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from embedserve.cli import main
from embedserve.engine.backends import check_settings
from embedserve.engine.backends.torch import TorchBackend, cpu_has_amx, cpu_has_bf16, resolve_packing
from embedserve.engine.batching import pad_batch
from embedserve.engine.bert import SelfAttention
from embedserve.engine.loading import load_model
from embedserve.engine.packed import PackedLinear, onednn_bf16_supported
from embedserve.engine.tokenizer import WordPieceTokenizer
from embedserve.errors import InvalidRequestError
from embedserve.settings import EngineSettings

pytestmark = pytest.mark.skipif(not onednn_bf16_supported(), reason="oneDNN has no bf16 kernels on this CPU")

CPU, BF16 = torch.device("cpu"), torch.bfloat16


def _layer(in_features: int, out_features: int) -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(in_features, out_features).to(BF16)


@pytest.mark.parametrize("rows", [(0,), (1,), (37,), (3, 50)])
@pytest.mark.parametrize("gelu", [None, "none", "tanh"])
def test_a_packed_layer_computes_the_plain_layer(rows: tuple[int, ...], gelu: str | None) -> None:
    linear = _layer(96, 160)
    x = torch.randn(*rows, 96).to(BF16)
    got = PackedLinear(linear, gelu=gelu)(x)
    # The reference in fp32 from the same bf16 operands: the packed kernel accumulates in fp32 and rounds once.
    want = F.linear(x.float(), linear.weight.float(), linear.bias.float())
    if gelu is not None:
        want = F.gelu(want, approximate=gelu)
    assert got.shape == (*rows, 160) and got.dtype == BF16
    torch.testing.assert_close(got.float(), want, atol=0.02, rtol=0.01)  # bf16 keeps 8 bits: 2^-8 relative
    if gelu is None:
        assert torch.equal(got, linear(x))  # the same oneDNN arithmetic as the unpacked layer: bit for bit


def test_only_bf16_cpu_layers_can_be_packed() -> None:
    with pytest.raises(ValueError, match="bf16 CPU layer"):
        PackedLinear(nn.Linear(8, 8))


def _backend(model_dir: Path, packing: str) -> TorchBackend:
    settings = EngineSettings(model=str(model_dir), backend="torch", dtype="bfloat16", onednn_packing=packing)  # type: ignore[arg-type]
    return TorchBackend(load_model(settings), settings)


def test_packing_the_model_keeps_its_vectors(minilm_model_dir: Path) -> None:
    plain, packed = _backend(minilm_model_dir, "off"), _backend(minilm_model_dir, "on")
    assert not plain.packed and packed.packed
    layers = dict(packed.encoder.named_modules())
    assert isinstance(layers["encoder.layer.0.attention.self.qkv"], PackedLinear)
    assert isinstance(layers["encoder.layer.5.intermediate.dense"], PackedLinear)
    assert isinstance(layers["encoder.layer.5.output.dense"], PackedLinear)
    assert type(layers["encoder.layer.0.attention.output.dense"]) is nn.Linear  # the square projection stays plain
    assert all(m.qkv is not None for m in packed.encoder.modules() if isinstance(m, SelfAttention))

    model = load_model(EngineSettings(model=str(minilm_model_dir)))
    tok = WordPieceTokenizer(model.tokenizer_path, vocab_size=model.config.vocab_size)
    texts = ["Laura is a DJ.", "A much longer sentence about the weather in Lisbon, " * 6, "x"]
    ids, mask = pad_batch(tok.encode_texts(texts, truncate=True, max_tokens=256), pad_id=tok.pad_id)
    a, b = plain.forward(ids, mask), packed.forward(ids, mask)
    cos = np.sum(a * b, axis=1)
    assert cos.min() >= 0.9999, cos  # both bf16; the packed one rounds the GELU's input once less


def test_auto_packs_bf16_on_amx_cpus_only() -> None:
    assert resolve_packing("auto", CPU, BF16) == (cpu_has_amx() and cpu_has_bf16())
    assert resolve_packing("auto", CPU, torch.float32) is False
    assert resolve_packing("auto", CPU, torch.int8) is False
    assert resolve_packing("auto", torch.device("cuda"), torch.float16) is False
    assert resolve_packing("off", CPU, BF16) is False
    assert resolve_packing("on", CPU, BF16) is True


def test_on_is_refused_where_it_cannot_apply(reference_model_dir: Path) -> None:
    with pytest.raises(InvalidRequestError, match="for bfloat16 on a CPU, not float32 on cpu"):
        resolve_packing("on", CPU, torch.float32)
    with pytest.raises(InvalidRequestError, match="not float16 on cuda"):
        resolve_packing("on", torch.device("cuda"), torch.float16)
    base = EngineSettings(model=str(reference_model_dir), load_format="dummy", onednn_packing="on")
    with pytest.raises(InvalidRequestError, match="not the onnx backend"):
        check_settings(base.model_copy(update={"backend": "onnx"}))
    with pytest.raises(InvalidRequestError, match="not float32 on cpu"):
        check_settings(base.model_copy(update={"dtype": "float32", "device": "cpu"}))


def test_the_serve_flag_fails_with_one_line_where_it_cannot_apply(
    reference_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["serve", "--model", str(reference_model_dir), "--load-format", "dummy", "--dtype", "float32"]
    code = main([*argv, "--onednn-packing", "on", "--no-auth", "--port", "0", "--data-dir", str(tmp_path)])
    assert code == 2
    assert "--onednn-packing on is for bfloat16 on a CPU, not float32 on cpu" in capsys.readouterr().err
