"""The playground in a real browser against a real server: heatmap, semantic search, errors."""

from __future__ import annotations

import base64
import json
import math
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import expect

from tests.browser.conftest import Server, minilm_dir, screenshot
from tests.browser.passages import ANSWER, PASSAGES, QUERY
from tests.serverproc import running_server

REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"
TEXTS = ["Laura is a DJ.", "Laura plays records at parties every weekend."]


def _embed_direct(server: Server, texts: list[str]) -> list[list[float]]:
    headers = {"Authorization": f"Bearer {server.api_key}"} if server.api_key else {}
    body = {"input": texts, "input_type": "document", "encoding_format": "base64"}
    resp = httpx.post(f"{server.base_url}/v1/embeddings", json=body, headers=headers, timeout=30)
    resp.raise_for_status()
    out = []
    for item in resp.json()["data"]:
        raw = base64.b64decode(item["embedding"])
        out.append([x[0] for x in __import__("struct").iter_unpack("<f", raw)])
    return out


def _cos(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def _open(page: Any, server: Server) -> None:
    page.goto("/playground")
    page.wait_for_selector("body[data-ready=true]")
    if server.api_key:
        # The page looks the model up once the key is typed and keys its passage cache by it: wait for that.
        with page.expect_response(lambda r: r.url.endswith("/v1/models") and r.status == 200):
            page.get_by_label("API key").fill(server.api_key)


def test_embedding_two_texts_shows_token_counts_norms_and_a_matching_heatmap(page: Any, server: Server) -> None:
    foreign: list[str] = []
    page.on(
        "request",
        lambda r: foreign.append(r.url) if urlsplit(r.url).netloc != urlsplit(server.base_url).netloc else None,
    )
    _open(page, server)
    page.get_by_label("Texts").fill("\n".join(TEXTS))
    page.get_by_role("button", name="Embed", exact=True).click()
    cells = page.locator("#heatmap td.cell")
    cells.first.wait_for()
    assert cells.count() == 4
    values = {
        (int(c.get_attribute("data-row")), int(c.get_attribute("data-col"))): float(c.get_attribute("data-value"))
        for c in cells.all()
    }
    expected = _cos(*_embed_direct(server, TEXTS))
    assert values[(0, 0)] == pytest.approx(1.0, abs=1e-4) and values[(1, 1)] == pytest.approx(1.0, abs=1e-4)
    assert values[(0, 1)] == pytest.approx(values[(1, 0)]) == pytest.approx(expected, abs=1e-4)
    assert page.locator("#heatmap td.cell[data-row='0'][data-col='1']").inner_text() == f"{expected:.3f}"
    tokens = page.locator("#vectors-table td.tokens").all_inner_texts()
    assert tokens[0] == "7"  # "Laura is a DJ." → [CLS] laura is a dj . [SEP]
    norms = [float(t) for t in page.locator("#vectors-table td.norm").all_inner_texts()]
    assert norms == pytest.approx([1.0, 1.0], abs=1e-3)
    assert page.locator("#stat-credits").inner_text() not in ("", "–")
    assert "input_type" in page.locator("#code-block").inner_text()
    assert not foreign, f"the page reached beyond its server: {foreign}"
    screenshot(page, "playground.png")


def test_semantic_search_over_fifty_uploaded_passages_ranks_the_answer_first(page: Any, server: Server) -> None:
    _open(page, server)
    tab = page.get_by_role("tab", name="Embed")
    tab.focus()
    page.keyboard.press("ArrowRight")  # the tabs are keyboard-operable
    assert page.get_by_role("tab", name="Semantic search").get_attribute("aria-selected") == "true"
    jsonl = "\n".join(json.dumps({"id": i, "text": p}) for i, p in enumerate(PASSAGES))
    page.get_by_label("Load passages from a file").set_input_files(
        files=[{"name": "passages.jsonl", "mimeType": "application/jsonl", "buffer": jsonl.encode()}]
    )
    # The page reads the file asynchronously: wait for the count rather than read it at once.
    expect(page.locator("#passage-count")).to_have_text("50 passages")
    page.get_by_label("Query", exact=True).fill(QUERY)
    page.get_by_role("button", name="Search", exact=True).click()
    first = page.locator("#ranking li").first
    first.wait_for()
    assert first.locator(".passage").inner_text() == ANSWER
    scores = [float(s) for s in page.locator("#ranking li .score").all_inner_texts()]
    assert scores == sorted(scores, reverse=True) and len(scores) == 10
    progress = page.locator("#search-progress")
    assert progress.get_attribute("value") == progress.get_attribute("max")
    screenshot(page, "playground-search.png")


def test_an_invalid_key_shows_the_api_401_message(page: Any, server: Server) -> None:
    if server.api_key is None:
        pytest.skip("the server under test runs without auth, so no key is invalid")
    resp = httpx.post(
        f"{server.base_url}/v1/embeddings", json={"input": "x"}, headers={"Authorization": "Bearer es-wrong"}
    )
    assert resp.status_code == 401
    message = resp.json()["error"]["message"]
    page.goto("/")
    page.wait_for_selector("body[data-ready=true]")
    page.get_by_label("API key").fill("es-wrong")
    page.get_by_role("button", name="Embed", exact=True).click()
    alert = page.get_by_role("alert").filter(has_text="HTTP 401")
    alert.wait_for()
    assert message in alert.inner_text()
    assert page.locator("#embed-results").is_hidden()
    screenshot(page, "playground-401.png", docs=False)


def test_the_page_fits_a_phone_width_without_horizontal_scrolling(browser: Any, server: Server) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, base_url=server.base_url)
    page = context.new_page()
    page.goto("/")
    page.wait_for_selector("body[data-ready=true]")
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    context.close()
    assert overflow <= 0


def test_hundreds_of_passages_are_embedded_in_batches_with_progress(page: Any, server: Server) -> None:
    posts: list[int] = []
    page.on(
        "request",
        lambda r: (
            posts.append(len(json.loads(r.post_data or "{}").get("input", [])))
            if r.method == "POST" and r.url.endswith("/v1/embeddings")
            else None
        ),
    )
    _open(page, server)
    page.get_by_role("tab", name="Semantic search").click()
    passages = [f"{p} (note {i})" for i in range(4) for p in PASSAGES]  # 200 distinct passages
    page.get_by_role("textbox", name="Passages").fill("\n".join(passages))
    page.get_by_label("Query", exact=True).fill(QUERY)
    page.get_by_label("Show top").select_option("0")
    page.get_by_role("button", name="Search", exact=True).click()
    page.locator("#search-progress-label").filter(has_text="Done").wait_for(timeout=60_000)
    assert page.locator("#ranking li").count() == 200
    assert page.locator("#ranking li .passage").first.inner_text().startswith(ANSWER)
    assert sorted(posts, reverse=True)[:2] == [32, 32] and sum(posts) == 200 + 1  # batches, then the query
    posts.clear()
    page.get_by_label("Query", exact=True).fill("Which planet is the largest?")
    page.get_by_role("button", name="Search", exact=True).click()
    page.locator("#search-summary").filter(has_text="Which planet").wait_for()
    assert posts == [1]  # passages come from the page's cache; only the query is embedded
    assert "Jupiter" in page.locator("#ranking li .passage").first.inner_text()


def test_random_weights_banner_shows_only_on_a_dummy_server(
    page: Any, server: Server, tmp_path_factory: pytest.TempPathFactory
) -> None:
    page.goto("/playground")
    page.wait_for_selector("body[data-ready=true]")
    expect(page.locator("#random-weights-banner")).to_be_hidden()
    log = tmp_path_factory.mktemp("dummy-server") / "server.log"
    with running_server(["--model", minilm_dir(), "--load-format", "dummy", "--no-auth"], log_path=log) as dummy:
        page.goto(f"{dummy.base_url}/playground")
        banner = page.locator("#random-weights-banner")
        expect(banner).to_be_visible()
        expect(banner).to_contain_text("Random weights")


@pytest.mark.parametrize(("path", "rendered"), [("/docs", ".swagger-ui .info .title"), ("/redoc", "h1")])
def test_api_docs_render_with_no_internet(page: Any, server: Server, path: str, rendered: str) -> None:
    origin = urlsplit(server.base_url).netloc
    blocked: list[str] = []

    def only_this_server(route: Any) -> None:
        if urlsplit(route.request.url).netloc == origin:
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    page.route("**/*", only_this_server)
    page.goto(path)
    expect(page.locator(rendered).first).to_contain_text("embedserve")
    # ReDoc's sidebar tries its maker's logo and hides it when that fails: cosmetic, so it is the one allowed miss.
    assert not [u for u in blocked if u != REDOC_LOGO], f"{path} reached beyond its server: {blocked}"
