"""The ONNX Runtime backend: the torch encoder exported once to a cached ONNX graph, float32 or dynamic int8.

The graph ends in pooling and normalisation, so a forward pass is one ``session.run``. Runs on the
``CPUExecutionProvider`` (or CUDA where onnxruntime-gpu provides it) on the engine's single inference thread.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from embedserve.engine.backends.onnx_build import Variant, ensure_graph
from embedserve.engine.backends.torch import default_threads, resolve_device
from embedserve.engine.build_cache import cache_root, weights_fingerprint
from embedserve.engine.loading import LoadedModel
from embedserve.errors import EmbedServeError, EngineError, InvalidRequestError, ModelLoadError
from embedserve.settings import EngineSettings

logger = logging.getLogger(__name__)

_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"


def resolve_variant(requested: str) -> Variant:
    if requested in ("auto", "float32"):
        return "float32"
    if requested == "int8":
        return "int8"
    raise InvalidRequestError(
        f"--dtype {requested} is not available with the onnx backend; it supports float32 (the default, also "
        "chosen by auto) and int8 (dynamic quantisation, opt-in: lower parity)."
    )


def resolve_providers(requested: str, variant: Variant) -> tuple[str, list[Any]]:
    """The device string to report and the ONNX Runtime providers for it."""
    available = ort.get_available_providers()
    device = resolve_device(requested)
    if device.type == "cuda" and _CUDA not in available:
        if requested == "auto":  # torch sees a GPU but this onnxruntime build cannot use it
            logger.warning("onnx backend: a CUDA device is present but onnxruntime has no CUDA provider; using CPU")
            return "cpu", [_CPU]
        raise InvalidRequestError(
            f"--device {requested} needs onnxruntime-gpu: this onnxruntime offers {', '.join(available)}."
        )
    if device.type == "cuda":
        if variant == "int8":
            raise InvalidRequestError("--dtype int8 with the onnx backend runs on CPU only; use --device cpu.")
        return str(device), [(_CUDA, {"device_id": device.index or 0}), _CPU]
    if device.type != "cpu":
        raise InvalidRequestError(f"--device {requested} is not supported by the onnx backend (cpu or cuda).")
    return "cpu", [_CPU]


def open_session(path: Path, *, providers: list[Any], threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=providers)


def load_session(
    model: LoadedModel, *, variant: Variant, root: Path, providers: list[Any], threads: int
) -> ort.InferenceSession:
    """Open the cached graph; one that will not load (damaged on disk) is rebuilt once, then it is an error."""
    try:
        weights = weights_fingerprint(model)
    except OSError as exc:
        raise ModelLoadError(f"Could not read {model.weights_path}: {exc.strerror or exc}.") from None
    for rebuild in (False, True):
        try:
            path = ensure_graph(model, variant=variant, root=root, weights=weights, rebuild=rebuild)
        except EmbedServeError:
            raise
        except Exception as exc:
            logger.debug("onnx export failed", exc_info=True)
            raise ModelLoadError(
                f"Could not build the ONNX {variant} graph for {model.served_name} under {root}: "
                f"{type(exc).__name__}: {exc}"
            ) from None
        try:
            return open_session(path, providers=providers, threads=threads)
        except Exception as exc:
            if rebuild:
                logger.debug("onnx session failed", exc_info=True)
                raise ModelLoadError(f"ONNX Runtime could not load {path}: {type(exc).__name__}: {exc}") from None
            logger.warning("onnx %s graph: cached %s does not load (%s); rebuilding it", variant, path, exc)
    raise AssertionError("unreachable")  # pragma: no cover


class OnnxBackend:
    name = "onnx"

    def __init__(self, model: LoadedModel, settings: EngineSettings) -> None:
        variant = resolve_variant(settings.dtype)
        self.device, providers = resolve_providers(settings.device, variant)
        self.dtype: str = variant
        # Dynamic int8 scales each activation tensor by its min/max over the whole batch, padding included, so a
        # text's vector would depend on its batch-mates (cosine down to 0.95 on MiniLM). Running each text alone,
        # unpadded, keeps an embedding a function of its text; it costs throughput on short texts.
        self._row_by_row = variant == "int8"
        self._session: ort.InferenceSession | None = load_session(
            model,
            variant=variant,
            root=cache_root(settings, "onnx"),
            providers=providers,
            threads=settings.threads or default_threads(),
        )

    def forward(
        self, input_ids: npt.NDArray[np.int64], attention_mask: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.float32]:
        if self._session is None:
            raise EngineError("The onnx backend has been closed.")
        if not self._row_by_row:
            return self._run(self._session, input_ids, attention_mask)
        rows = []
        for ids, mask in zip(input_ids, attention_mask, strict=True):
            length = int(np.flatnonzero(mask)[-1]) + 1 if mask.any() else 1  # trailing padding trimmed
            rows.append(self._run(self._session, ids[None, :length], mask[None, :length]))
        return np.concatenate(rows)

    @staticmethod
    def _run(
        session: ort.InferenceSession, input_ids: npt.NDArray[np.int64], attention_mask: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.float32]:
        feed = {"input_ids": input_ids, "attention_mask": attention_mask}
        (out,) = session.run(["embeddings"], feed)
        return cast(npt.NDArray[np.float32], np.asarray(out, dtype=np.float32))

    def close(self) -> None:
        self._session = None  # frees the graph's memory; the engine does not run it again


def create_onnx(model: LoadedModel, settings: EngineSettings) -> OnnxBackend:
    return OnnxBackend(model, settings)
