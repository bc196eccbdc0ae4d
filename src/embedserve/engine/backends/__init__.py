"""Backends registered by name; ``create_backend`` builds the one the settings ask for."""

from __future__ import annotations

from embedserve.engine.backends.base import Backend, BackendFactory
from embedserve.engine.loading import LoadedModel
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


def create_backend(model: LoadedModel, settings: EngineSettings) -> Backend:
    name = resolve_backend_name(settings)
    factory = BACKENDS.get(name)
    if factory is None:
        raise InvalidRequestError(f"Unknown backend {name!r}; available: {', '.join(sorted(BACKENDS))}.")
    return factory(model, settings)
