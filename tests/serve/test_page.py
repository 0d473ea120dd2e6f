"""The web page in a real browser (headless Debian chromium driven by playwright): pick a bundled sample, caption
it, see the caption and the mask overlay. The test installs chromium with apt-get when it is missing (CI has apt);
it skips, saying why, only where there is neither chromium nor apt-get. Swagger UI at /docs renders with no
request to another host."""

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
