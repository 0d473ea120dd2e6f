"""Screenshots for docs/images/ in a real browser: the documentation site, and the attention views of a model.

Builds the site (``mkdocs build --strict``) into a temporary folder, serves it on a free local port and opens it in
headless chromium (Debian's, driven by playwright, as the browser tests do), then saves the top of each page:

    python scripts/docs_screenshots.py [--out docs/images] [--width 1280] [--height 860]
        [--model demo_out/run/best] [--report demo_out/report.html]

writes ``site_home.png`` (the landing page) and ``site_hisem.png`` (a system page). With ``--model`` (a model that
declares attention maps, e.g. the one ``make demo`` trains) it also serves that model with ``changecap serve``'s app,
captions the first bundled sample on the page, points at the word whose map is most concentrated and saves
``attention_view.png``. With ``--report`` (the report ``make demo`` writes) it saves the report's training curves
(``demo_curves.png``) and the first example's attention view (``demo_attention.png``). Every request the pages make
must stay on the local server: a request to another host fails the run, so the screenshots also show that the site
and the page read offline.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: page of the site → file name of its screenshot
PAGES: dict[str, str] = {"index.html": "site_home.png", "hisem.html": "site_hisem.png"}


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the site without a log line per request."""

    def log_message(self, format: str, *args: object) -> None:
        pass


def build_site(site: Path) -> None:
    """``mkdocs build --strict`` of this checkout into ``site``."""
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(site)]
    subprocess.run(cmd, cwd=REPO, check=True)


def screenshot(site: Path, out: Path, width: int, height: int) -> list[Path]:
    """Serve ``site`` on 127.0.0.1 and save the top of every page of :data:`PAGES` into ``out``."""
    from playwright.sync_api import sync_playwright

    browser_path = _browser_path()
    handler = functools.partial(QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    written = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": width, "height": height})
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            for name, image in PAGES.items():
                page.goto(base + name, wait_until="networkidle")
                path = out / image
                page.screenshot(path=str(path))
                written.append(path)
            browser.close()
        elsewhere = [u for u in requests if not u.startswith((base, "data:", "blob:"))]
        if elsewhere:
            raise SystemExit(f"error: the site requested other hosts: {elsewhere[:5]}")
    finally:
        server.shutdown()
    return written


def _browser_path() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        raise SystemExit("error: no chromium on this machine (Debian: apt-get install chromium)")
    return found


def attention_view(model: Path, out: Path, width: int, height: int) -> list[Path]:
    """Serve ``model`` on 127.0.0.1, caption the first bundled sample on the page with its attention, point at the
    word whose map peaks highest and save the page."""
    import socket

    import uvicorn
    from playwright.sync_api import sync_playwright

    from changecap.inference import ChangeCaptioner
    from changecap.serve import create_app

    app = create_app(ChangeCaptioner.from_pretrained(model, device="cpu"), str(model))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    path = out / "attention_view.png"
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=_browser_path(), args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": width, "height": height})
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.goto(base + "/", wait_until="networkidle")
            page.wait_for_selector("#attention-choice:not([hidden])", timeout=30_000)
            page.select_option("#sample", "0")
            page.wait_for_function("document.getElementById('after-view').src.startsWith('blob:')")
            page.click("#go")
            page.wait_for_selector("#attention-figure:not([hidden])", timeout=120_000)
            peaks = []
            for i in range(page.locator("#words span").count()):
                page.hover(f"#words span:nth-child({i + 1})")
                page.wait_for_function(f"document.querySelector('#words span:nth-child({i + 1})')"
                                       ".classList.contains('on')")  # fmt: skip
                page.wait_for_timeout(100)  # the after image is redrawn under the new map
                text = page.inner_text("#heat-caption")
                peaks.append(int(text.rsplit("(", 1)[1].split(" %")[0]))
            best = max(range(len(peaks)), key=peaks.__getitem__)
            page.hover(f"#words span:nth-child({best + 1})")
            page.wait_for_timeout(300)
            page.screenshot(path=str(path), full_page=True)
            browser.close()
        elsewhere = [u for u in requests if not u.startswith((base, "data:", "blob:"))]
        if elsewhere:
            raise SystemExit(f"error: the page requested other hosts: {elsewhere[:5]}")
    finally:
        server.should_exit = True
    return [path]


def report_views(report: Path, out: Path, width: int) -> list[Path]:
    """The training curves and the first example's attention view of an HTML report, as chromium draws them."""
    from playwright.sync_api import sync_playwright

    written = [out / "demo_curves.png", out / "demo_attention.png"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_browser_path(), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": width, "height": 900})
        page.goto(report.resolve().as_uri())
        page.locator("svg.changecap-curves").screenshot(path=str(written[0]))
        page.locator(".card").first.screenshot(path=str(written[1]))
        browser.close()
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images", help="folder of the PNG files")
    parser.add_argument("--width", type=int, default=1280, help="browser window width in pixels")
    parser.add_argument("--height", type=int, default=860, help="browser window height in pixels")
    parser.add_argument("--model", type=Path, help="a model with attention maps: attention_view.png of its web page")
    parser.add_argument("--report", type=Path, help="a make demo report: demo_curves.png and demo_attention.png")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site"
        build_site(site)
        written += screenshot(site, args.out, args.width, args.height)
    if args.model is not None:
        written += attention_view(args.model, args.out, 1000, 560)
    if args.report is not None:
        written += report_views(args.report, args.out, 1000)
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
