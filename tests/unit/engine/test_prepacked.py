"""``--prepacked-weights``: bf16 linears with weights reordered once for oneDNN and GELU fused into the FFN's first
matmul (engine/prepacked.py). Each prepacked layer must compute what the plain layer computes, to bf16 rounding; the
whole model must give the same vectors; and the flag must be refused, in one line, where it cannot apply."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from embedserve.cli import main
from embedserve.engine import prepacked
from embedserve.engine.backends import check_settings
from embedserve.engine.backends import torch as torch_backend
from embedserve.engine.backends.torch import TorchBackend, resolve_prepacking
from embedserve.engine.batching import pad_batch
from embedserve.engine.bert import Intermediate, SelfAttention
from embedserve.engine.int8_recipe import RECIPES
from embedserve.engine.loading import BertConfig, load_model
from embedserve.engine.prepacked import PrepackedLinear
from embedserve.engine.quant import BF16Linear
from embedserve.engine.tokenizer import WordPieceTokenizer
from embedserve.errors import InvalidRequestError
from embedserve.settings import EngineSettings, OnOffAuto
from tests.cpu_features import NEEDS_ONEDNN_BF16

CPU, BF16 = torch.device("cpu"), torch.bfloat16


def _layer(in_features: int, out_features: int) -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(in_features, out_features).to(BF16)


@NEEDS_ONEDNN_BF16
@pytest.mark.parametrize("rows", [(0,), (1,), (37,), (3, 50)])
def test_a_prepacked_layer_is_the_plain_layer_bit_for_bit(rows: tuple[int, ...]) -> None:
    linear = _layer(96, 160)
    x = torch.randn(*rows, 96).to(BF16)
    got = PrepackedLinear(linear)(x)
    assert got.shape == (*rows, 160) and got.dtype == BF16
    assert torch.equal(got, linear(x))  # the same oneDNN arithmetic, without the per-call reorder


@NEEDS_ONEDNN_BF16
@pytest.mark.parametrize(("gelu", "other"), [("none", "tanh"), ("tanh", "none")])
def test_the_fused_gelu_is_the_one_asked_for(gelu: str, other: str) -> None:
    # Pre-activations around -3, where exact and tanh GELU differ by ~10% (-0.00405 against -0.00364): the
    # fused result must be near its own GELU of the fp32 sums and measurably off the other one.
    linear = nn.Linear(64, 32)
    with torch.no_grad():
        linear.weight.fill_(1 / 64)
        linear.bias.fill_(-3.0)
    linear = linear.to(BF16)
    x = (torch.rand(40, 64) * 0.2 - 0.1).to(BF16)
    got = PrepackedLinear(linear, gelu=gelu)(x).float()
    sums = F.linear(x.float(), linear.weight.float(), linear.bias.float())
    own, wrong = F.gelu(sums, approximate=gelu), F.gelu(sums, approximate=other)
    assert ((got - own).abs() / own.abs()).max() < 0.02
    assert ((got - wrong).abs() / wrong.abs()).min() > 0.05


@NEEDS_ONEDNN_BF16
def test_a_prepacked_layer_refuses_to_be_moved_saved_or_copied() -> None:
    layer = nn.Sequential(PrepackedLinear(_layer(8, 8)))
    with pytest.raises(RuntimeError, match="moved or cast"):
        layer.to(torch.float32)
    with pytest.raises(RuntimeError, match="saved"):
        layer.state_dict()
    with pytest.raises(RuntimeError, match="copied or pickled"):
        copy.deepcopy(layer)
    with pytest.raises(RuntimeError, match="copied or pickled"):
        pickle.dumps(layer)


def test_only_bf16_cpu_layers_can_be_prepacked() -> None:
    with pytest.raises(ValueError, match="bf16 CPU layer"):
        PrepackedLinear(nn.Linear(8, 8))


class _AppliesGelu(nn.Module):
    def __init__(self, gelu: str) -> None:
        super().__init__()
        self.gelu = gelu


def test_the_ffn_takes_only_a_projection_that_applies_its_own_gelu() -> None:
    cfg = BertConfig.from_dict(
        {"vocab_size": 30, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16}
    )
    ffn = Intermediate(cfg)  # hidden_act "gelu": the exact GELU
    for wrong in (nn.Linear(8, 16), nn.Identity(), _AppliesGelu("tanh")):
        with pytest.raises(ValueError, match="does not apply GELU"):
            ffn.fuse_activation(wrong)
    assert isinstance(ffn.act, nn.GELU) and isinstance(ffn.dense, nn.Linear)  # refused: nothing changed
    fused = _AppliesGelu("none")
    ffn.fuse_activation(fused)
    assert ffn.dense is fused  # type: ignore[comparison-overlap]  # mypy keeps dense's type from before the call
    assert isinstance(ffn.act, nn.Identity)


def _backend(model_dir: Path, prepack: OnOffAuto) -> TorchBackend:
    settings = EngineSettings(
        model=str(model_dir), backend="torch", dtype="bfloat16", device="cpu", prepacked_weights=prepack
    )
    return TorchBackend(load_model(settings), settings)


@NEEDS_ONEDNN_BF16
@pytest.mark.parametrize("amx", [True, False])
def test_prepacking_the_model_keeps_its_vectors(
    minilm_model_dir: Path, monkeypatch: pytest.MonkeyPatch, amx: bool
) -> None:
    monkeypatch.setattr(torch_backend, "cpu_has_amx", lambda: amx)
    plain, packed = _backend(minilm_model_dir, "off"), _backend(minilm_model_dir, "on")
    assert not plain.prepacked and packed.prepacked
    layers = dict(packed.encoder.named_modules())
    assert isinstance(layers["encoder.layer.0.attention.self.qkv"], PrepackedLinear)
    assert isinstance(layers["encoder.layer.5.intermediate.dense"], PrepackedLinear)
    assert isinstance(layers["encoder.layer.5.intermediate.act"], nn.Identity)  # the GELU moved into the matmul
    assert isinstance(layers["encoder.layer.5.output.dense"], PrepackedLinear)
    # the square projection is prepacked too, except on AMX, where oneDNN's packed kernel is slower at 640-896 rows
    square = layers["encoder.layer.0.attention.output.dense"]
    assert type(square) is (nn.Linear if amx else PrepackedLinear)
    assert all(m.qkv is not None for m in packed.encoder.modules() if isinstance(m, SelfAttention))

    model = load_model(EngineSettings(model=str(minilm_model_dir)))
    tok = WordPieceTokenizer(model.tokenizer_path, vocab_size=model.config.vocab_size)
    texts = ["Laura is a DJ.", "A much longer sentence about the weather in Lisbon, " * 6, "x"]
    ids, mask = pad_batch(tok.encode_texts(texts, truncate=True, max_tokens=256), pad_id=tok.pad_id)
    cos = np.sum(plain.forward(ids, mask) * packed.forward(ids, mask), axis=1)
    assert cos.min() >= 0.9999, cos  # both bf16; the prepacked one rounds the GELU's input once less


@pytest.mark.parametrize("native_bf16", [True, False])
def test_auto_prepacks_bf16_on_cpus_with_native_bf16_only(monkeypatch: pytest.MonkeyPatch, native_bf16: bool) -> None:
    monkeypatch.setattr(torch_backend, "cpu_has_bf16", lambda: native_bf16)
    monkeypatch.setattr(prepacked, "onednn_bf16_supported", lambda: True)  # emulated bf16 (AVX-512 without BF16)
    assert resolve_prepacking("auto", device=CPU, dtype=BF16, dtype_asked="bfloat16") is native_bf16
    assert resolve_prepacking("auto", device=CPU, dtype=torch.float32, dtype_asked="auto") is False
    assert resolve_prepacking("auto", device=CPU, dtype=torch.int8, dtype_asked="int8") is False
    assert resolve_prepacking("auto", device=torch.device("cuda"), dtype=torch.float16, dtype_asked="auto") is False
    assert resolve_prepacking("off", device=CPU, dtype=BF16, dtype_asked="bfloat16") is False
    assert (
        resolve_prepacking("on", device=CPU, dtype=BF16, dtype_asked="bfloat16") is True
    )  # asked for: on any bf16 CPU


def test_on_is_refused_where_it_cannot_apply(reference_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InvalidRequestError, match=r"for bfloat16 on a CPU, not float32 on cpu\.$"):
        resolve_prepacking("on", device=CPU, dtype=torch.float32, dtype_asked="float32")
    with pytest.raises(
        InvalidRequestError, match=r"--dtype auto chose float32 on cpu .*: leave --prepacked-weights at auto\.$"
    ):
        resolve_prepacking("on", device=CPU, dtype=torch.float32, dtype_asked="auto")
    with pytest.raises(InvalidRequestError, match="not float16 on cuda"):
        resolve_prepacking("on", device=torch.device("cuda"), dtype=torch.float16, dtype_asked="auto")
    base = EngineSettings(model=str(reference_model_dir), load_format="dummy", prepacked_weights="on")
    with pytest.raises(InvalidRequestError, match="not the onnx backend"):
        check_settings(base.model_copy(update={"backend": "onnx"}))
    with pytest.raises(InvalidRequestError, match="not float32 on cpu"):
        check_settings(base.model_copy(update={"dtype": "float32", "device": "cpu"}))
    monkeypatch.setattr(prepacked, "onednn_bf16_supported", lambda: False)
    with pytest.raises(InvalidRequestError, match="oneDNN's bf16 kernels, which this CPU lacks"):
        resolve_prepacking("on", device=CPU, dtype=BF16, dtype_asked="bfloat16")
    assert resolve_prepacking("auto", device=CPU, dtype=BF16, dtype_asked="auto") is False


def test_the_serve_flag_fails_with_one_line_where_it_cannot_apply(
    reference_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "serve",
        "--model",
        str(reference_model_dir),
        "--load-format",
        "dummy",
        "--dtype",
        "float32",
        "--device",
        "cpu",
    ]
    code = main([*argv, "--prepacked-weights", "on", "--no-auth", "--port", "0", "--data-dir", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--prepacked-weights on is for bfloat16 on a CPU, not float32 on cpu" in err[0], err


@NEEDS_ONEDNN_BF16
@pytest.mark.parametrize(("in_features", "out_features", "rows"), [(64, 24, 37), (4096, 1024, 300)])
def test_the_int8_models_bf16_layer_is_prepacked_bit_for_bit(in_features: int, out_features: int, rows: int) -> None:
    """``--dtype int8`` keeps the FFN's down projection in bf16 (BF16Linear), prepacked wherever oneDNN runs bf16:
    the same sums as the plain bf16 layer, bit for bit, on fp32 input and output (bge-large's 4096 x 1024 too)."""
    linear = _layer(in_features, out_features)
    plain, packed = BF16Linear(linear), BF16Linear(linear, prepack=True)
    assert isinstance(packed.inner, PrepackedLinear) and type(plain.inner) is nn.Linear
    x = torch.randn(2, rows, in_features)
    with torch.inference_mode():
        out = packed(x)
        assert out.dtype == torch.float32 and out.shape == (2, rows, out_features)
        assert torch.equal(out, plain(x))


@pytest.mark.skipif(
    not (torch_backend.cpu_has_fast_int8() and torch_backend.cpu_has_bf16()),
    reason="an int8 recipe keeps a bf16 layer only on CPUs with fast int8 (AVX512-VNNI or AMX) and native bf16",
)
def test_an_int8_recipe_with_a_bf16_layer_prepacks_it(minilm_model_dir: Path) -> None:
    settings = EngineSettings(model=str(minilm_model_dir), backend="torch", dtype="int8", device="cpu")
    int8 = TorchBackend(load_model(settings), settings, int8_recipe=RECIPES["bf16-ffn-out"][1])
    assert not int8.prepacked  # the flag is about the bf16 model; the int8 model's bf16 layer is always prepacked
    ffn_out = dict(int8.encoder.named_modules())["encoder.layer.5.output.dense"]
    assert isinstance(ffn_out, BF16Linear) and isinstance(ffn_out.inner, PrepackedLinear)
