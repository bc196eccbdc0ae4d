"""The Vercel AI SDK (``ai`` + ``@ai-sdk/openai-compatible``, npm) returns the openai SDK's vectors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import numpy as np
import numpy.typing as npt
import pytest

from tests.clients.conftest import API_KEY, MODEL, TEXTS, cosines
from tests.serverproc import REPO

JS_DIR = REPO / "tests" / "sdk" / "js"


def test_embed_many_with_the_openai_compatible_provider(base_url: str, reference: npt.NDArray[np.float32]) -> None:
    if shutil.which("node") is None or not (JS_DIR / "node_modules" / "@ai-sdk" / "openai-compatible").exists():
        if os.environ.get("CI"):
            pytest.fail(f"node and `npm ci --prefix {JS_DIR}` are needed (.ci/run installs them)")
        pytest.skip(f"needs node and `npm ci --prefix {JS_DIR}` (.ci/run does both)")
    env = {**os.environ, "EMBEDSERVE_BASE_URL": base_url, "EMBEDSERVE_API_KEY": API_KEY, "EMBEDSERVE_MODEL": MODEL}
    out = subprocess.run(
        ["node", "ai_sdk_embed.mjs", json.dumps(TEXTS)],
        cwd=JS_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert cosines(np.array(result["embeddings"], dtype=np.float32), reference).min() >= 0.99999
    assert result["usage"]["tokens"] > 0
