"""The web page in a real browser (headless Debian chromium driven by playwright): pick a bundled sample, caption
it, see the caption and the mask overlay. The test installs chromium with apt-get when it is missing (CI has apt);
it skips, saying why, only where there is neither chromium nor apt-get. With a model that declares attention maps the
page draws where it looked for each word. Swagger UI at /docs renders with no request to another host."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="changecap serve needs the 'serve' extra (FastAPI)")
pytest.importorskip("uvicorn", reason="changecap serve needs the 'serve' extra (uvicorn)")
playwright_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs playwright (make env)")

from changecap.inference import ChangeCaptioner  # noqa: E402
from changecap.serve import create_app  # noqa: E402
from tests.browser import chromium  # noqa: E402


@pytest.fixture
def server(scc_dir: Path, serve_app: Callable[[Any], str]) -> str:
    return serve_app(create_app(ChangeCaptioner.from_pretrained(scc_dir, device="cpu"), "tiny semantic_cc"))


def test_page_captions_a_sample_and_overlays_the_mask(server: str, tmp_path: Path) -> None:
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        page = browser.new_page()
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto(server + "/")
        page.wait_for_function("document.getElementById('model').textContent.includes('semantic_cc')")
        page.select_option("#sample", "0")
        page.wait_for_function("document.getElementById('after-view').src.startsWith('blob:')")
        page.click("#go")
        page.wait_for_function("document.getElementById('caption').textContent.length > 0", timeout=60_000)
        page.wait_for_selector("#mask-figure:not([hidden])", timeout=60_000)
        assert page.inner_text("#error") == ""
        assert page.inner_text("#model").startswith("model: tiny semantic_cc (semantic_cc), with change masks")
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        # no request ever left the local server (no CDN, no fonts)
        assert requests and all(u.startswith(server) or u.startswith(("blob:", "data:")) for u in requests)
        # a fresh page asked to caption nothing says so instead of calling the API
        page.goto(server + "/")
        page.click("#go")
        assert page.inner_text("#error") == "choose two images or a sample"
        browser.close()
    assert (tmp_path / "page.png").stat().st_size > 1000


def test_the_page_draws_where_the_model_looked_for_each_word(
    model_dir: Path, serve_app: Callable[[Any], str], tmp_path: Path
) -> None:
    server = serve_app(create_app(ChangeCaptioner.from_pretrained(model_dir, device="cpu"), "tiny hisem"))
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(server + "/")
        page.wait_for_selector("#attention-choice:not([hidden])")  # hisem declares attention maps
        page.select_option("#sample", "0")
        page.wait_for_function("document.getElementById('after-view').src.startsWith('blob:')")
        page.click("#go")
        page.wait_for_selector("#attention-figure:not([hidden])", timeout=60_000)
        words = page.locator("#words span").all_inner_texts()
        assert words == page.inner_text("#caption").split() and len(words) >= 2
        assert page.inner_text("#heat-caption").startswith(f"after, where the model looked for \u201c{words[0]}\u201d")
        page.hover("#words span:nth-child(2)")
        page.wait_for_function(f"document.getElementById('heat-caption').textContent.includes('\u201c{words[1]}')")
        assert page.locator("#words span.on").all_inner_texts() == [words[1]]
        # the canvas holds the after image with the heat map drawn over it: many distinct colours
        colours = page.evaluate("""() => {
            const d = document.getElementById('heat').getContext('2d').getImageData(0, 0, 256, 256).data;
            const seen = new Set();
            for (let i = 0; i < d.length; i += 4 * 97) seen.add(d[i] + ',' + d[i + 1] + ',' + d[i + 2]);
            return seen.size; }""")
        assert colours > 50
        assert page.inner_text("#error") == ""
        page.screenshot(path=str(tmp_path / "attention.png"), full_page=True)
        browser.close()
    assert (tmp_path / "attention.png").stat().st_size > 1000


def test_docs_render_offline(server: str) -> None:
    """Swagger UI at /docs renders the API with every request to another host refused (as on a machine offline)."""
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        page = browser.new_page()
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        local = (server + "/", "data:", "blob:")
        page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(local) else route.abort())
        page.goto(server + "/docs")
        page.wait_for_selector(".opblock-summary-path", timeout=60_000)  # Swagger UI drew the operations
        paths = [t.replace("\u200b", "") for t in page.locator(".opblock-summary-path").all_inner_texts()]
        assert "/api/caption" in paths and "/api/health" in paths
        assert page.title() == "changecap - Swagger UI"
        assert requests and all(u.startswith(local) for u in requests), [u for u in requests if not u.startswith(local)]
        browser.close()
