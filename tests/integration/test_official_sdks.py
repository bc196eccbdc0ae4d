"""The seed page's examples through the official clients (openai for Python and for Node) against a live server."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.paths import REFERENCE_DIR, REPO
from tests.serverproc import ServerProcess, running_server

JS_DIR = REPO / "tests" / "sdk" / "js"
SEED_MODEL = "BAAI/bge-large-en-v1.5"


@pytest.fixture(scope="module")
def replica_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The architecture-exact bge-large replica (random weights), served under the seed's model name."""
    log = tmp_path_factory.mktemp("server") / "server.log"
    args = [
        "--model",
        str(REFERENCE_DIR),
        "--load-format",
        "dummy",
        "--served-model-name",
        SEED_MODEL,
        "--no-auth",
    ]
    with running_server(args, log_path=log) as server:
        yield server


def test_replica_is_marked_random_in_banner_ready_models_and_headers(replica_server: ServerProcess) -> None:
    assert "RANDOM WEIGHTS (--load-format dummy)" in replica_server.log()
    assert httpx.get(f"{replica_server.base_url}/ready", timeout=60).json()["random_weights"] is True
    with openai.OpenAI(api_key="any-key", base_url=f"{replica_server.base_url}/v1") as client:
        (card,) = client.models.list().data
        assert card.model_extra and card.model_extra["random_weights"] is True
        raw = client.embeddings.with_raw_response.create(input="Laura is a DJ.", model=SEED_MODEL)
        assert raw.headers["x-embedserve-random-weights"] == "true"


def _check_seed_response(response: openai.types.CreateEmbeddingResponse) -> list[float]:
    vec = response.data[0].embedding
    assert len(vec) == 1024 and all(math.isfinite(v) for v in vec)
    assert abs(math.sqrt(sum(v * v for v in vec)) - 1) < 1e-4
    assert response.usage.prompt_tokens == 7 and response.model == SEED_MODEL
    assert response.model_extra and response.model_extra["meta"] == {"usage": {"credits_used": 1}}
    assert response.model_extra["id"].startswith("embd-")
    return vec


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_python_sdk_sync_default_and_float_agree(replica_server: ServerProcess) -> None:
    with openai.OpenAI(api_key="any-key", base_url=f"{replica_server.base_url}/v1") as client:
        text = "Laura is a DJ."
        default = _check_seed_response(client.embeddings.create(input=text, model=SEED_MODEL))
        floats = _check_seed_response(client.embeddings.create(input=text, model=SEED_MODEL, encoding_format="float"))
        # The SDK asks for base64 by default and decodes it: bit-exact with the float path.
        assert default == floats


async def test_python_sdk_async(replica_server: ServerProcess) -> None:
    async with openai.AsyncOpenAI(api_key="any-key", base_url=f"{replica_server.base_url}/v1") as client:
        response = await client.embeddings.create(input=["Laura is a DJ.", "Laura is a DJ."], model=SEED_MODEL)
        assert len(response.data) == 2 and response.usage.prompt_tokens == 14
        assert response.data[0].embedding == response.data[1].embedding
        single = _check_seed_response(await client.embeddings.create(input="Laura is a DJ.", model=SEED_MODEL))
        # Alone or batched, the same text gives the same vector up to kernel rounding: the last bits in fp32. Any other
        # dtype `auto` resolves to gets the 0.9995 floor: bf16 GEMMs block differently per batch shape, which over 24
        # random-weight layers costs about 1e-4 (0.99989 measured); int8 (auto on AVX512-VNNI CPUs without native bf16,
        # weights rounded to nearest here) scales each token row on its own, so it too moves only by rounding.
        dtype = httpx.get(f"{replica_server.base_url}/ready", timeout=60).json()["dtype"]
        assert _cosine(single, response.data[0].embedding) > (0.99999 if dtype == "float32" else 0.9995)


def test_python_sdk_surfaces_errors(replica_server: ServerProcess) -> None:
    with openai.OpenAI(api_key="any-key", base_url=f"{replica_server.base_url}/v1", max_retries=0) as client:
        with pytest.raises(openai.NotFoundError) as err:
            client.embeddings.create(input="x", model="no-such-model")
        assert "no-such-model" in str(err.value)
        with pytest.raises(openai.BadRequestError, match="Matryoshka"):
            client.embeddings.create(input="x", model=SEED_MODEL, dimensions=256)


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_node_sdk_runs_seed_example(replica_server: ServerProcess) -> None:
    if not (JS_DIR / "node_modules" / "openai").exists():
        pytest.skip(f"run `npm ci --prefix {JS_DIR}` first (.ci/run does)")
    env = {
        **os.environ,
        "EMBEDSERVE_API_KEY": "any-key",
        "EMBEDSERVE_BASE_URL": f"{replica_server.base_url}/v1",
    }
    out = subprocess.run(["node", "seed_example.mjs"], cwd=JS_DIR, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SEED_JS_OK" in out.stdout and "prompt_tokens: 7" in out.stdout
