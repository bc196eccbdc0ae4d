"""The PyTorch backend: fp32 reference, bf16 on CPUs that have it, fp16/bf16 on CUDA, W8A8 int8 on CPU; SDPA.

``--dtype auto`` picks bfloat16 weights on CPUs with native bf16 (AVX512-BF16 or AMX; measured parity on MiniLM: min
cosine 0.99983-0.99986 vs fp32 over 520 sentences, see docs/performance.md, "Fidelity"), int8 (``int8_build.py``; min
cosine 0.999312) on CPUs with AVX512-VNNI but no native bf16, where it ran 1.66-2.15x fp32 through HTTP on an Ice
Lake, float32 on other CPUs, float16 on CUDA. Where bf16 is native int8 is opt-in (1.09-1.21x prepacked bf16 in
library calls on a Zen 5); it is refused on CPUs without AVX512-VNNI or AMX, where torch's int8 matmul has no fast
kernel.
Runs under ``torch.inference_mode`` on the engine's single inference thread.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Generator

import numpy as np
import numpy.typing as npt
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from embedserve.engine import prepacked
from embedserve.engine.bert import build_encoder
from embedserve.engine.build_cache import cache_root
from embedserve.engine.graphs import GRAPH_MAX_TOKENS, CudaGraphs, graph_buckets
from embedserve.engine.int8_build import INT8_RECIPE, build_int8_encoder
from embedserve.engine.int8_recipe import Int8Recipe
from embedserve.engine.loading import LoadedModel
from embedserve.engine.pooling import pool
from embedserve.engine.quant import int8_linear_available, replace_linears
from embedserve.errors import InvalidRequestError
from embedserve.settings import EngineSettings

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidRequestError(f"--device {requested} was asked for, but no CUDA device is available.")
    return device


def check_cuda_graphs(device: torch.device) -> None:
    """``--cuda-graphs`` replays captured passes on a GPU; on a CPU there is nothing to capture."""
    if device.type != "cuda":
        raise InvalidRequestError("--cuda-graphs needs a CUDA device (--device cuda); on CPU leave it off.")


def cpu_has_bf16() -> bool:
    """Native bf16 matmuls (AVX512-BF16 or AMX): there bf16 runs 2x (Zen 4) to 4x (AMX) fp32; elsewhere it is emulated
    and slower.

    oneDNN's own ``_is_mkldnn_bf16_supported`` says yes on any AVX-512 CPU because it can emulate bf16 there; on a
    Cascade Lake Xeon (AVX-512 VNNI, no BF16) that emulation measured 231 ms for a 13-token bge-large forward pass
    against 158 ms in fp32, so only the instruction sets count.
    """
    return _cpu_has("_is_avx512_bf16_supported", "_is_amx_tile_supported")


def cpu_has_amx() -> bool:
    return _cpu_has("_is_amx_tile_supported")


def resolve_prepacking(requested: str, *, device: torch.device, dtype: torch.dtype, dtype_asked: str) -> bool:
    """Whether to prepack the linears for oneDNN (engine/prepacked.py). ``auto``: on CPUs with native bf16 (AMX or
    AVX512-BF16) running bf16 (measured faster on an AMX Xeon and a Zen 5; a Zen 4 has not been measured), not where
    bf16 is emulated. ``on`` wherever torch runs bf16 on a CPU, and refused, in one line, elsewhere."""
    onednn_bf16_supported = prepacked.onednn_bf16_supported
    if requested == "off":
        return False
    applies = device.type == "cpu" and dtype == torch.bfloat16
    if requested == "auto":
        return applies and cpu_has_bf16() and onednn_bf16_supported()
    if not applies:
        chosen = f"{str(dtype).removeprefix('torch.')} on {device.type}"
        if dtype_asked == "auto" and device.type == "cpu":
            anyway = (
                "--dtype bfloat16 would prepack, but bf16 is emulated here, slower than float32"
                if onednn_bf16_supported()
                else "oneDNN has no bf16 kernels for this CPU at all"
            )
            raise InvalidRequestError(
                f"--prepacked-weights on is for bfloat16, and --dtype auto chose {chosen} (no native bf16 on this "
                f"CPU; {anyway}): leave --prepacked-weights at auto."
            )
        raise InvalidRequestError(f"--prepacked-weights on is for bfloat16 on a CPU, not {chosen}.")
    if not onednn_bf16_supported():
        raise InvalidRequestError("--prepacked-weights on needs oneDNN's bf16 kernels, which this CPU lacks.")
    return True


def cpu_has_fast_int8() -> bool:
    """AVX512-VNNI or AMX, and oneDNN's int8 linear in this torch: there int8 matmuls have fast kernels. Without them
    torch's int8 matmul (``torch._int_mm``) falls back to a plain loop: on an AMD EPYC with AVX2 only it measured
    0.5-2.4 GOP/s against 39-71 GFLOP/s for fp32 on the same 2 cores, so an int8 model ran far slower than fp32."""
    return _cpu_has("_is_vnni_supported", "_is_amx_tile_supported") and int8_linear_available()


def _cpu_has(*probes: str) -> bool:
    """Whether any of torch's ``torch.cpu._is_*_supported`` probes says yes (a probe this torch lacks says no)."""
    return any(bool(getattr(torch.cpu, probe, lambda: False)()) for probe in probes)


def resolve_dtype(requested: str, device: torch.device) -> torch.dtype:
    """``auto``: float16 on CUDA; on a CPU, bf16 where it is native (AMX, AVX512-BF16), else int8 where it has fast
    int8 kernels (AVX512-VNNI: Cascade Lake and Ice Lake Xeons), else float32. On an Ice Lake Xeon int8 measured
    1.80-2.11x float32 in library calls on bge-large (bf16, emulated there: 0.25x) at MiniLM min cosine 0.999312;
    where bf16 is native int8 measured only 1.09-1.21x it (Zen 5), so bf16 stays (docs/performance.md)."""
    if requested == "auto":
        if device.type == "cuda":
            return torch.float16
        if cpu_has_bf16():
            return torch.bfloat16
        return torch.int8 if cpu_has_fast_int8() else torch.float32
    if requested == "int8":
        if device.type != "cpu":
            raise InvalidRequestError("--dtype int8 with the torch backend runs on CPU only; on CUDA use float16.")
        if not cpu_has_fast_int8():
            raise InvalidRequestError(
                "--dtype int8 needs a CPU with AVX512-VNNI or AMX: without them torch's int8 matmul is a plain loop, "
                "tens of times slower than float32. Use --dtype auto."
            )
        return torch.int8
    if requested not in _DTYPES:
        raise InvalidRequestError(f"--dtype {requested} is not available with the torch backend on {device.type}.")
    if requested == "float16" and device.type == "cpu":
        raise InvalidRequestError("--dtype float16 is for CUDA; on CPU use bfloat16 or float32.")
    return _DTYPES[requested]


ONEDNN_CACHE_ENTRIES = "64"


def bound_onednn_caches() -> None:
    """Cap oneDNN's primitive cache and ideep's operator cache (1024 entries each by default) before the first bf16
    op. Every new batch shape adds entries (about 1 MB each with AMX kernels), so a server seeing many shapes grew
    1177 -> 2079 MiB over a 10-minute mixed-length soak; with 64 entries RSS stays flat at the same speed (100 varied
    batches: 78-80 s either way, 1008 vs 1304 MiB). Both libraries read these variables once; a value already set
    in the environment wins."""
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", ONEDNN_CACHE_ENTRIES)
    os.environ.setdefault("LRU_CACHE_CAPACITY", ONEDNN_CACHE_ENTRIES)


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class PretransposedLinear(nn.Module):
    """``nn.Linear`` with its weight stored (in, out): MKL's fp32 GEMM reads that layout ~1.8x faster when only a few
    rows come in (one short text: 1.62 -> 0.90 ms for a 1024x4096 layer on 2 cores) and as fast for large batches."""

    weight_t: torch.Tensor
    bias: torch.Tensor

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        weight = linear.weight.detach()
        self.register_buffer("weight_t", weight.t().contiguous())
        bias = linear.bias.detach() if linear.bias is not None else torch.zeros(weight.shape[0], dtype=weight.dtype)
        self.register_buffer("bias", bias)
        self.out_features = linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight_t)
        return out.reshape(*x.shape[:-1], self.out_features)


def pretranspose_fp32_linears(encoder: nn.Module) -> list[str]:
    """Swap every float32 ``nn.Linear`` for a ``PretransposedLinear`` (CPU only: measured there, not on CUDA)."""
    return replace_linears(
        encoder, lambda _name, linear: PretransposedLinear(linear) if linear.weight.dtype == torch.float32 else None
    )


CUDA_SDPA_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
"""Attention kernels allowed on CUDA: cuDNN's is left out. Torch 2.11 picks cuDNN on Hopper, which builds a plan for
each new (batch, seq) shape: on an H200 (bge-large fp16) a batch of a shape not seen before took 125-154 ms against
9.5-11.4 ms again, so the mixed-length HTTP workload ran at 52k tokens/s. CUTLASS's memory-efficient kernel has no
such cost (17.3 ms new, 13.5 again) and took it to 154k tokens/s; steady 512-token batches are ~19% slower with it
(528k against 650k tokens/s); warmed small batches 0.9-1.2x (32x12 tokens 11.1 vs 9.8 ms, 8x128 7.8 vs 9.2 ms),
launch-bound either way. Measured with torch 2.11 (the GPU machine's). Flash never runs here (the padding mask rules
it out). ``sdpa_kernel`` sets process-wide flags: fine with the engine's one inference thread."""


class TorchBackend:
    name = "torch"

    def __init__(self, model: LoadedModel, settings: EngineSettings, *, int8_recipe: Int8Recipe = INT8_RECIPE) -> None:
        """``int8_recipe``: what ``--dtype int8`` builds; the server always builds ``INT8_RECIPE``, the benchmarks
        (``int8_speed.py``) the others, calibrated once."""
        bound_onednn_caches()
        self._device = resolve_device(settings.device)
        self._torch_dtype = resolve_dtype(settings.dtype, self._device)
        self.prepacked = resolve_prepacking(
            settings.prepacked_weights, device=self._device, dtype=self._torch_dtype, dtype_asked=settings.dtype
        )
        if self._device.type == "cpu":
            torch.set_num_threads(settings.threads or default_threads())
        self.dtype = str(self._torch_dtype).removeprefix("torch.")
        self.device = str(self._device)
        self._pooling = model.pooling
        self._normalize = model.normalize
        if self._torch_dtype == torch.int8:
            if settings.dtype == "auto":
                logger.info(
                    "--dtype auto chose int8: AVX512-VNNI without native bf16, where int8 runs ~2x float32 at min "
                    "cosine >= 0.999; --dtype float32 serves the unquantised reference"
                )
            self.encoder = build_int8_encoder(
                model, recipe=int8_recipe, bf16=cpu_has_bf16(), cache=cache_root(settings, "int8"),
                kernels=cache_root(settings, "kernels"),
            )  # fmt: skip
        else:
            self.encoder = build_encoder(model).to(device=self._device, dtype=self._torch_dtype)
        if self.prepacked:
            packed = prepacked.prepack_linears(self.encoder, attention_output=not cpu_has_amx())
            logger.info("prepacked weights: %d linear layers packed for oneDNN", len(packed))
        if self._device.type == "cpu":
            pretranspose_fp32_linears(self.encoder)  # fp32 layers only: bf16's and int8's own kernels are left alone
        else:
            self.encoder.unpad_ratio = math.inf  # packing measured 0.99-1.01x on an H200 (bench_cuda.py): off
        self.sdpa_backends: list[SDPBackend] | None = CUDA_SDPA_BACKENDS if self._device.type == "cuda" else None
        self.graphs: CudaGraphs | None = None
        if settings.cuda_graphs:
            check_cuda_graphs(self._device)
            started = time.perf_counter()
            buckets = graph_buckets(
                max_tokens=GRAPH_MAX_TOKENS, max_seq=model.max_seq_length, max_rows=settings.max_batch_size
            )
            with torch.inference_mode(), self._kernels():
                self.graphs = CudaGraphs(
                    self._pooled, device=self._device, buckets=buckets, pad_id=model.config.pad_token_id
                )
            logger.info("captured %d CUDA graphs in %.1fs", len(buckets), time.perf_counter() - started)

    def _kernels(self) -> contextlib.AbstractContextManager[None]:
        return sdpa_kernel(self.sdpa_backends) if self.sdpa_backends else contextlib.nullcontext()

    def _pooled(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self._pool(self.encoder(ids, mask), mask)

    def _pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return pool(hidden, mask, mode=self._pooling, normalize=self._normalize)

    def _on_device(
        self, input_ids: npt.NDArray[np.int64], attention_mask: npt.NDArray[np.int64]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(input_ids).to(self._device), torch.from_numpy(attention_mask).to(self._device)

    def forward(
        self, input_ids: npt.NDArray[np.int64], attention_mask: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.float32]:
        with torch.inference_mode(), self._kernels():
            if self.graphs is not None and (replayed := self.graphs.forward(input_ids, attention_mask)) is not None:
                return replayed
            return _numpy(self._pooled(*self._on_device(input_ids, attention_mask)))

    def forward_steps(
        self, input_ids: npt.NDArray[np.int64], attention_mask: npt.NDArray[np.int64]
    ) -> Generator[None, None, npt.NDArray[np.float32]]:
        """``forward`` one encoder layer per step (``BertEncoder.steps``): the same vectors, with a yield after each
        layer where the caller may run another pass. No torch context stays entered across a yield."""
        with torch.inference_mode():
            ids, mask = self._on_device(input_ids, attention_mask)
            layers = self.encoder.steps(ids, mask)
        while True:
            with torch.inference_mode(), self._kernels():
                try:
                    next(layers)
                except StopIteration as done:
                    hidden: torch.Tensor = done.value
                    break
            yield
        with torch.inference_mode():
            return _numpy(self._pool(hidden, mask))

    def close(self) -> None:
        if self._device.type == "cuda":
            torch.cuda.empty_cache()


def _numpy(vectors: torch.Tensor) -> npt.NDArray[np.float32]:
    return vectors.cpu().numpy().astype(np.float32, copy=False)


def create_torch(model: LoadedModel, settings: EngineSettings) -> TorchBackend:
    return TorchBackend(model, settings)
