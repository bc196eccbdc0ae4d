"""The engine for in-process gateway API tests: the real ``Engine`` on the fake backend, so the real bge tokenizer
(exact token counts), deterministic unit vectors, and a failure trigger ("FAIL" in a text) to prove that failed
inference refunds its reservation.
"""

from __future__ import annotations

from tokenizers import Tokenizer

from embedserve.engine.backends.fake import FakeBackend
from embedserve.engine.engine import Engine
from embedserve.settings import EngineSettings
from tests.paths import REFERENCE_DIR

FAIL_TOKEN = "FAIL"


def fail_token_ids() -> frozenset[int]:
    """The WordPiece ids ``FAIL`` tokenises to: a batch holding any of them fails."""
    tokenizer = Tokenizer.from_file(str(REFERENCE_DIR / "tokenizer.json"))
    return frozenset(tokenizer.encode(FAIL_TOKEN, add_special_tokens=False).ids)


def stub_engine() -> Engine:
    settings = EngineSettings(model=str(REFERENCE_DIR), backend="fake", served_model_name="BAAI/bge-large-en-v1.5")
    return Engine(settings, backend=FakeBackend(dim=1024, fail_on=fail_token_ids()))
