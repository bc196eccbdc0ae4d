"""Where the test and benchmark files live, defined once: the repository, the shared reference files beside it."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_REFERENCE = REPO.parent / "shared" / "reference"
REFERENCE_DIR = SHARED_REFERENCE / "bge-large-en-v1.5"  # config and tokenizer of bge-large-en-v1.5, no weights
