"""Screenshots of the documentation site in a real browser, for docs/images/.

Builds the site (``mkdocs build --strict``) into a temporary folder, serves it on a free local port and opens it in
headless chromium (Debian's, driven by playwright, as the browser tests do), then saves the top of each page:

    python scripts/docs_screenshots.py [--out docs/images] [--width 1280] [--height 860]

writes ``site_home.png`` (the landing page) and ``site_hisem.png`` (a system page). Every request the pages make
must stay on the local server: a request to another host fails the run, so the screenshots also show that the site
reads offline.
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

    browser_path = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser_path is None:
        raise SystemExit("error: no chromium on this machine (Debian: apt-get install chromium)")
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images", help="folder of the PNG files")
    parser.add_argument("--width", type=int, default=1280, help="browser window width in pixels")
    parser.add_argument("--height", type=int, default=860, help="browser window height in pixels")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site"
        build_site(site)
        for path in screenshot(site, args.out, args.width, args.height):
            print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
