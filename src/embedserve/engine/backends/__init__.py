"""Backends registered by name; ``create_backend`` builds the one the settings ask for."""

from __future__ import annotations

from embedserve.engine.backends.base import Backend, BackendFactory
from embedserve.engine.loading import LoadedModel
from embedserve.engine.memory import configure_allocator
from embedserve.errors import InvalidRequestError
from embedserve.settings import EngineSettings


def _torch(model: LoadedModel, settings: EngineSettings) -> Backend:
    from embedserve.engine.backends.torch import create_torch

    return create_torch(model, settings)


def _onnx(model: LoadedModel, settings: EngineSettings) -> Backend:
    from embedserve.engine.backends.onnx import create_onnx

    return create_onnx(model, settings)


def _fake(model: LoadedModel, settings: EngineSettings) -> Backend:
    from embedserve.engine.backends.fake import create_fake

    return create_fake(model, settings)


# Imported lazily so the fake backend (API tests) never pays for importing torch or onnxruntime.
BACKENDS: dict[str, BackendFactory] = {"torch": _torch, "onnx": _onnx, "fake": _fake}


def resolve_backend_name(settings: EngineSettings) -> str:
    return "torch" if settings.backend == "auto" else settings.backend


def _factory(name: str) -> BackendFactory:
    factory = BACKENDS.get(name)
    if factory is None:
        raise InvalidRequestError(f"Unknown backend {name!r}; available: {', '.join(sorted(BACKENDS))}.")
    return factory


def check_settings(settings: EngineSettings) -> None:
    """Refuse a backend, dtype or device this machine cannot run before any model is loaded (or downloaded). The
    backends check the same when they are built; this only moves the refusal ahead of ``load_model``."""
    name = resolve_backend_name(settings)
    _factory(name)
    if name == "torch":
        from embedserve.engine.backends.torch import (
            check_cuda_graphs,
            resolve_device,
            resolve_dtype,
            resolve_prepacking,
        )

        device = resolve_device(settings.device)
        dtype = resolve_dtype(settings.dtype, device)
        resolve_prepacking(settings.prepacked_weights, device=device, dtype=dtype, dtype_asked=settings.dtype)
        if settings.cuda_graphs:
            check_cuda_graphs(device)
    else:
        if settings.cuda_graphs:
            raise InvalidRequestError(f"--cuda-graphs is for the torch backend on CUDA, not the {name} backend.")
        if settings.prepacked_weights == "on":
            raise InvalidRequestError(f"--prepacked-weights on is for the torch backend, not the {name} backend.")
    if name == "onnx":
        from embedserve.engine.backends.onnx import resolve_providers, resolve_variant

        resolve_providers(settings.device, resolve_variant(settings.dtype))


def create_backend(model: LoadedModel, settings: EngineSettings) -> Backend:
    """The backend the settings name. Also sets the process's allocator up for a forward pass's large, short-lived
    tensors (``configure_allocator``): the server, the library and the benchmark's library call all get it here."""
    configure_allocator()
    return _factory(resolve_backend_name(settings))(model, settings)
