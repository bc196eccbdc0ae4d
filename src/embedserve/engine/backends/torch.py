"""The PyTorch backend: fp32 reference, bf16 on CPUs that have it, fp16/bf16 on CUDA; SDPA attention.

Runs under ``torch.inference_mode`` on the engine's single inference thread.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import numpy.typing as npt
import torch

from embedserve.engine.bert import BertEncoder, init_dummy_weights, load_state
from embedserve.engine.loading import LoadedModel
from embedserve.engine.pooling import pool
from embedserve.errors import InvalidRequestError, ModelLoadError
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


def resolve_dtype(requested: str, device: torch.device) -> torch.dtype:
    if requested == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if requested not in _DTYPES:
        raise InvalidRequestError(f"--dtype {requested} is not available with the torch backend on {device.type}.")
    if requested == "float16" and device.type == "cpu":
        raise InvalidRequestError("--dtype float16 is for CUDA; on CPU use bfloat16 or float32.")
    return _DTYPES[requested]


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def build_encoder(model: LoadedModel) -> BertEncoder:
    encoder = BertEncoder(model.config)
    if model.weights_path is None:
        init_dummy_weights(encoder, seed=model.seed)
    else:
        from safetensors.torch import load_file

        try:
            load_state(encoder, load_file(str(model.weights_path)))
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"Could not load {model.weights_path}: {exc}") from None
    return encoder.eval()


class TorchBackend:
    name = "torch"

    def __init__(self, model: LoadedModel, settings: EngineSettings) -> None:
        self._device = resolve_device(settings.device)
        self._torch_dtype = resolve_dtype(settings.dtype, self._device)
        if self._device.type == "cpu":
            torch.set_num_threads(settings.threads or default_threads())
        self.dtype = str(self._torch_dtype).removeprefix("torch.")
        self.device = str(self._device)
        self._pooling = model.pooling
        self._normalize = model.normalize
        self.encoder = build_encoder(model).to(device=self._device, dtype=self._torch_dtype)

    def forward(
        self, input_ids: npt.NDArray[np.int64], attention_mask: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.float32]:
        with torch.inference_mode():
            ids = torch.from_numpy(input_ids).to(self._device)
            mask = torch.from_numpy(attention_mask).to(self._device)
            hidden = self.encoder(ids, mask)
            out = pool(hidden, mask, mode=self._pooling, normalize=self._normalize)
            return out.cpu().numpy().astype(np.float32, copy=False)

    def close(self) -> None:
        if self._device.type == "cuda":
            torch.cuda.empty_cache()


def create_torch(model: LoadedModel, settings: EngineSettings) -> TorchBackend:
    return TorchBackend(model, settings)
