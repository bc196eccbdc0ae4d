"""W8A8 int8 linear layers for the torch backend: per-channel weight scales, per-token activation scales.

Stock dynamic quantisation uses one scale per activation tensor, which BERT's outlier channels wreck. Here every
token row gets its own scale, every output channel of the weight its own, SmoothQuant-style per-input-channel factors
(calibrated on a fixed set of sentences) move activation outliers into the weights before rounding, and the few input
channels that stay largest after smoothing are taken out of the int8 product and computed in fp32 (LLM.int8()'s
decomposition, with the channels fixed at calibration).

The matmul is oneDNN's int8 linear (``torch.ops.onednn.qlinear_pointwise``) on weights packed once at load, which
also applies the weight scales as it writes its fp32 output. It takes one activation scale per tensor, so the
per-token scales are applied afterwards in the same pass that adds the bias; activations go in as uint8 with a zero
point of 128 (symmetric values shifted by 128), the form whose kernels use VNNI/AMX (signed int8 activations fell
back to oneDNN's reference kernel: 95 s for one 2048x1024x4096 product). Against ``torch._int_mm`` plus separate
dequantisation ops this measured 29.3 -> 24.6 ms for 2048 rows and 0.38 -> 0.23 ms for 16 (1024 -> 4096, Zen 4).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from embedserve.engine.fused import fused_available, rotate_quantize
from embedserve.engine.hadamard import HadamardRotation, fold_rotation
from embedserve.engine.prepacked import PrepackedLinear

QMAX = 127.0  # int8 codes span -127..127 (symmetric; -128 unused), weights and activations alike
_ZERO_POINT = 128  # uint8 activations carry the symmetric int8 value + 128
_ONE = torch.ones(())
_ZERO_POINT_T = torch.full((), _ZERO_POINT, dtype=torch.int64)


def _quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8: ``x ~= q * scale`` with ``scale`` of shape ``(rows, 1)``."""
    scale = x.abs().amax(dim=1, keepdim=True).clamp(min=1e-8) / QMAX
    return torch.round(x / scale).clamp(-QMAX, QMAX).to(torch.int8), scale


def _quantize_rows_shifted_(x: torch.Tensor, clip: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``_quantize_rows`` stored as uint8 ``q + 128`` (values 1..255): the same numbers, in the form oneDNN's fast
    int8 kernels take (with a zero point of 128). Overwrites ``x``, so no pass allocates a full-size temporary but
    the uint8 result; ``max|x|`` comes from ``amax`` and ``amin`` (no ``abs`` copy; ``torch.aminmax`` measured 15x
    slower than the two). ``|x| * 127 / max|x|`` never rounds past 127, so no clamp unless ``clip`` < 1 scales to
    that fraction of ``max|x|`` (larger values then saturate at +-127)."""
    amax = torch.maximum(x.amax(dim=1, keepdim=True), x.amin(dim=1, keepdim=True).neg_()).clamp_(min=1e-8)
    if clip != 1.0:
        amax.mul_(clip)
        x.mul_(QMAX / amax).round_().clamp_(-QMAX, QMAX)
    else:
        x.mul_(QMAX / amax).round_()
    return x.add_(_ZERO_POINT).to(torch.uint8), amax / QMAX


@dataclass(frozen=True, slots=True)
class ActScales:
    """How a layer's activations get their int8 scales: one per token (``group`` 0) or one per ``group`` consecutive
    input channels of each token (emulated only: oneDNN's kernel takes one scale per row); ``clip`` < 1 makes each
    scale that fraction of the max |x| it covers, the few values above it saturating (QuaRot clips at 0.9)."""

    group: int = 0
    clip: float = 1.0


PER_TOKEN = ActScales()
"""One unclipped scale per token: what every layer gets unless a recipe says otherwise."""


def int8_linear_available() -> bool:
    """Whether this torch has oneDNN's int8 linear (x86 builds with oneDNN do)."""
    mkldnn = torch.backends.mkldnn.is_available()  # type: ignore[no-untyped-call]
    return bool(mkldnn) and hasattr(torch.ops.onednn, "qlinear_pointwise")


class Int8Linear(nn.Module):
    """Drop-in for ``nn.Linear`` at inference: int8 weights, activations quantised per token on the fly.

    ``rotation`` (orthogonal ``T``) turns the input into ``T x`` online and the weight into ``W T^T`` at build, the
    same product with outliers spread over all channels; ``smooth`` and ``outliers`` then act on the rotated
    channels. ``smooth`` divides the activations' input channels (and multiplies the weight's); ``outliers`` names
    input channels computed in fp32 instead: they are zeroed before the per-token scale is taken, so they no longer
    set it. ``act`` says how the activation scales are taken (per token by default). ``rounding(weight, scale)`` gives
    the int8 codes of the (rotated, smoothed) weight for its per-row scales, instead of rounding to nearest (GPTQ).
    ``emulate`` computes the same integer products in float64 instead of oneDNN's kernel: any CPU, far slower, for
    fidelity measurements only (never served).
    """

    packed_weight: torch.Tensor | None
    weight_q_t: torch.Tensor | None
    weight_scale: torch.Tensor
    weight_zero_point: torch.Tensor
    bias: torch.Tensor
    act_factor: torch.Tensor | None
    outliers: torch.Tensor | None
    outlier_weight_t: torch.Tensor | None

    def __init__(
        self,
        linear: nn.Linear,
        smooth: torch.Tensor | None = None,
        outliers: torch.Tensor | None = None,
        *,
        rotation: HadamardRotation | None = None,
        act: ActScales = PER_TOKEN,
        rounding: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        emulate: bool = False,
    ) -> None:
        super().__init__()
        if act.group and (not emulate or linear.in_features % act.group):
            raise ValueError(f"per-group activation scales need emulate=True and groups dividing {linear.in_features}")
        self.act = act
        original = linear.weight.detach().float()
        self.rotation = rotation
        if rotation is not None:
            original = fold_rotation(original, rotation)
        weight = original * smooth[None, :] if smooth is not None else original.clone()
        factor = (1.0 / smooth).float() if smooth is not None else None
        if outliers is not None and outliers.numel():
            self.register_buffer("outliers", outliers.long())
            self.register_buffer("outlier_weight_t", original[:, outliers].t().contiguous())  # (k, out), unsmoothed
            weight[:, outliers] = 0.0
            factor = torch.ones(original.shape[1]) if factor is None else factor
            factor[outliers] = 0.0
        else:
            self.outliers = self.outlier_weight_t = None
        self.register_buffer("act_factor", factor)
        q, scale = _quantize_rows(weight)
        if rounding is not None:  # the same scales, the codes chosen another way (GPTQ) than rounding to nearest
            q = rounding(weight, scale.squeeze(1))
        packed = None if emulate else torch.ops.onednn.qlinear_prepack(q, None)  # oneDNN's blocked layout
        self.register_buffer("packed_weight", packed)
        self.register_buffer("weight_q_t", q.t().double().contiguous() if emulate else None)
        self.register_buffer("weight_scale", scale.squeeze(1).contiguous())  # (out,)
        self.register_buffer("weight_zero_point", torch.zeros(q.shape[0], dtype=torch.int64))
        bias = linear.bias.detach().float() if linear.bias is not None else torch.zeros(weight.shape[0])
        self.register_buffer("bias", bias)
        self.in_features = linear.in_features
        self.out_features = linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        rows = x.reshape(-1, self.in_features).float()
        if self.act.group:
            smoothed, cols = self._prepared(rows)
            out = self._grouped_product(smoothed).add_(self._bias(cols))
        else:
            q, scale, cols = self._quantized(rows)
            out = self._int8_product(q)
            out = torch.addcmul(self._bias(cols), out, scale, out=out)  # the per-token scales and the bias, one pass
        return out.reshape(*shape[:-1], self.out_features).to(x.dtype)

    def input_rows(self, x: torch.Tensor) -> torch.Tensor:
        """The fp32 rows this layer's int8 product quantises for input ``x``: rotated, smoothed, outliers zeroed."""
        return self._prepared(x.reshape(-1, self.in_features).float())[0]

    def _prepared(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The rows rotated, then smoothed with the outlier channels zeroed, in a copy the quantisation may
        overwrite; and the outlier channels' values (rotated, not smoothed) for the fp32 side product."""
        fresh = self.rotation is not None  # a rotation's output is a new tensor, the caller's rows are not
        if self.rotation is not None:
            rows = self.rotation(rows)
        cols = rows[:, self.outliers] if self.outliers is not None else None
        if self.act_factor is not None:
            return rows * self.act_factor, cols
        return (rows if fresh else rows.clone()), cols

    def _quantized(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """uint8 rows, their per-token scales and the outlier channels' values: the fused kernel's one pass per row
        (``engine/fused.py``) where it runs, else ``_prepared`` and ``_quantize_rows_shifted_``."""
        if self.weight_q_t is None and fused_available():
            return rotate_quantize(rows, self.rotation, act_factor=self.act_factor, outliers=self.outliers,
                                   clip=self.act.clip)  # fmt: skip
        prepared, cols = self._prepared(rows)
        q, scale = _quantize_rows_shifted_(prepared, self.act.clip)
        return q, scale, cols

    def _bias(self, cols: torch.Tensor | None) -> torch.Tensor:
        """The bias plus the fp32 outlier channels' share of the product."""
        if cols is None or self.outlier_weight_t is None:
            return self.bias
        return torch.addmm(self.bias, cols, self.outlier_weight_t)

    def _int8_product(self, q: torch.Tensor) -> torch.Tensor:
        """``(q - 128) @ Wq^T * weight_scale`` in fp32: oneDNN's kernel, or the same integer sums in float64
        (exact: ``|sum| <= n * 127^2`` stays far below 2^53) where ``emulate`` was asked for."""
        if self.weight_q_t is not None:
            return (q.double().sub_(_ZERO_POINT) @ self.weight_q_t).float().mul_(self.weight_scale)
        return torch.ops.onednn.qlinear_pointwise.tensor(  # type: ignore[no-any-return]
            q, _ONE, _ZERO_POINT_T, self.packed_weight, self.weight_scale, self.weight_zero_point,
            None, 1.0, 0, torch.float32, "none", [], "",
        )  # fmt: skip

    def _grouped_product(self, rows: torch.Tensor) -> torch.Tensor:
        """The emulated product with one activation scale per ``group`` channels of each row: each group's integer
        sum (exact in float64) times its own scale, summed over the groups, times the weight scales."""
        assert self.weight_q_t is not None
        n, size = rows.shape[0], self.act.group
        q, scale = _quantize_rows_shifted_(rows.reshape(-1, size), self.act.clip)
        groups = q.double().sub_(_ZERO_POINT).view(n, -1, size).transpose(0, 1)  # (groups, n, size)
        sums = torch.matmul(groups, self.weight_q_t.view(groups.shape[0], size, -1))  # (groups, n, out)
        out = (sums * scale.double().view(n, -1).t().unsqueeze(2)).sum(dim=0)
        return out.float().mul_(self.weight_scale)


def activation_maxima(
    model: nn.Module,
    run: Callable[[], object],
    names: Iterable[str],
    *,
    rotations: Mapping[str, HadamardRotation] | None = None,
) -> dict[str, torch.Tensor]:
    """Per-input-channel max |x| seen by each named ``nn.Linear`` while ``run()`` drives the model; of ``T x`` for
    the layers ``rotations`` names (the channels their ``Int8Linear`` will quantise)."""
    rotations = rotations or {}
    wanted = set(names)
    maxima: dict[str, torch.Tensor] = {}
    handles = []
    for name, module in model.named_modules():
        if name not in wanted:
            continue

        def hook(_m: nn.Module, args: tuple[torch.Tensor, ...], *, key: str = name) -> None:
            rows = args[0].detach().float().reshape(-1, args[0].shape[-1])
            if key in rotations:
                rows = rotations[key](rows)
            cur = rows.abs().amax(dim=0)
            maxima[key] = torch.maximum(maxima[key], cur) if key in maxima else cur

        handles.append(module.register_forward_pre_hook(hook))
    try:
        with torch.inference_mode():
            run()
    finally:
        for h in handles:
            h.remove()
    return maxima


def smoothing_factors(act_max: torch.Tensor, weight: torch.Tensor, alpha: float) -> torch.Tensor:
    """SmoothQuant's ``s_j = max|X_j|^alpha / max|W_j|^(1-alpha)``: divide activations by s, multiply weights."""
    w_max = weight.detach().float().abs().amax(dim=0).clamp(min=1e-5)
    s = act_max.clamp(min=1e-5).pow(alpha) / w_max.pow(1.0 - alpha)
    return s.clamp(min=1e-5)


def replace_linears(model: nn.Module, build: Callable[[str, nn.Linear], nn.Module | None]) -> list[str]:
    """Swap each ``nn.Linear`` in ``model`` for ``build(full_name, linear)`` where that is not None; the names swapped.

    Modules are listed before any swap, so a replacement's own inner layers are never visited."""
    replaced: list[str] = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if isinstance(child, nn.Linear) and (new := build(full, child)) is not None:
                setattr(module, child_name, new)
                replaced.append(full)
    return replaced


def quantize_linears(
    model: nn.Module,
    *,
    skip: Callable[[str], bool] = lambda _name: False,
    act_max: dict[str, torch.Tensor] | None = None,
    alpha: float = 0.5,
    outliers: int = 0,
    rotations: Mapping[str, HadamardRotation] | None = None,
    act: Mapping[str, ActScales] | None = None,
    rounding: Callable[[str, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    emulate: bool = False,
) -> list[str]:
    """Replace every ``nn.Linear`` not skipped by an ``Int8Linear``: rotated where ``rotations`` has its name,
    smoothed where ``act_max`` has it (maxima of the rotated input for a rotated layer), with the ``outliers`` input
    channels largest after smoothing kept in fp32, activation scales as ``act`` says (per token if unnamed), and
    int8 weight codes from ``rounding(name, weight, scale)`` where given (else rounded to nearest)."""
    rotations, act = rotations or {}, act or {}

    def build(full: str, linear: nn.Linear) -> nn.Module | None:
        if skip(full):
            return None
        smooth = kept = None
        if act_max is not None and full in act_max:
            smooth = smoothing_factors(act_max[full], linear.weight, alpha)
            if outliers:
                kept = torch.topk(act_max[full] / smooth, min(outliers, linear.in_features)).indices
        scales = act.get(full, PER_TOKEN)
        return Int8Linear(
            linear,
            smooth,
            kept,
            rotation=rotations.get(full),
            act=scales,
            rounding=None if rounding is None else partial(rounding, full),
            emulate=emulate,
        )

    return replace_linears(model, build)


class BF16Linear(nn.Module):
    """An ``nn.Linear`` computed in bfloat16 inside an otherwise float32 network (the matmul int8 hurts most); with
    ``prepack``, its weight prepacked for oneDNN (``engine/prepacked.py``: the same sums, without reordering the weight
    on every call)."""

    def __init__(self, linear: nn.Linear, *, prepack: bool = False) -> None:
        super().__init__()
        inner = nn.Linear(linear.in_features, linear.out_features, bias=linear.bias is not None)
        inner.load_state_dict(linear.state_dict())
        inner.to(torch.bfloat16)
        self.inner: nn.Module = PrepackedLinear(inner) if prepack else inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.to(torch.bfloat16)).to(x.dtype)  # type: ignore[no-any-return]


def is_ffn_output(name: str) -> bool:
    """The FFN's down projection (``...layer.N.output.dense``): the matmul whose input (GELU output) int8 hurts most."""
    return name.endswith(".output.dense") and ".attention." not in name


_TOPICS = [
    "the weather in Lisbon",
    "a bug in the payment service",
    "photosynthesis",
    "the French Revolution",
    "how to bake bread",
    "quarterly revenue",
    "neural networks",
    "a football match",
]
_FRAMES = [
    "What do you know about {t}?",
    "{T} is more interesting than it sounds.",
    "Represent this sentence for searching relevant passages: {t}",
    "My notes on {t}, written in a hurry on 3 May 2021 (see page 12), are hard to read.",
    "Summary: {t}. Details follow in the next section, with numbers, names and caveats.",
    "why is {t} so hard ?!",
]
CALIBRATION_TEXTS = [f.format(t=t, T=t[0].upper() + t[1:]) for t in _TOPICS for f in _FRAMES]
"""Fixed, varied English used to measure activation ranges for SmoothQuant; no user data is ever used."""
