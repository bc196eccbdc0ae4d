"""JavaScript clients from npm (the official ``openai`` package, and the Vercel AI SDK: ``ai`` +
``@ai-sdk/openai-compatible``) return the Python openai SDK's vectors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from tests.clients.conftest import API_KEY, MODEL, TEXTS, cosines
from tests.paths import REPO

JS_DIR = REPO / "tests" / "sdk" / "js"


def run_node(script: str, base_url: str, package: str) -> dict[str, Any]:
    if shutil.which("node") is None or not (JS_DIR / "node_modules" / package).exists():
        if os.environ.get("CI"):
            pytest.fail(f"node and `npm ci --prefix {JS_DIR}` are needed (.ci/run installs them)")
        pytest.skip(f"needs node and `npm ci --prefix {JS_DIR}` (.ci/run does both)")
    env = {**os.environ, "EMBEDSERVE_BASE_URL": base_url, "EMBEDSERVE_API_KEY": API_KEY, "EMBEDSERVE_MODEL": MODEL}
    out = subprocess.run(
        ["node", script, json.dumps(TEXTS)], cwd=JS_DIR, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stdout + out.stderr
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_embed_many_with_the_openai_compatible_provider(base_url: str, reference: npt.NDArray[np.float32]) -> None:
    result = run_node("ai_sdk_embed.mjs", base_url, "@ai-sdk/openai-compatible")
    assert cosines(np.array(result["embeddings"], dtype=np.float32), reference).min() >= 0.99999
    assert result["usage"]["tokens"] > 0


def test_official_openai_npm_package(base_url: str, reference: npt.NDArray[np.float32]) -> None:
    result = run_node("openai_embed.mjs", base_url, "openai")
    # Both SDKs ask for base64 by default and decode the same float32 bytes: bit-identical vectors.
    assert np.array_equal(np.array(result["embeddings"], dtype=np.float32), reference)
    assert result["usage"]["prompt_tokens"] > 0
