"""The web page in a real browser (headless Debian chromium driven by playwright): pick a bundled sample, caption
it, see the caption and the mask overlay. The test installs chromium with apt-get when it is missing (CI has apt);
it skips, saying why, only where there is neither chromium nor apt-get."""

from __future__ import annotations

import fcntl
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="changecap serve needs the 'serve' extra (FastAPI)")
uvicorn = pytest.importorskip("uvicorn", reason="changecap serve needs the 'serve' extra (uvicorn)")
playwright_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs playwright (make env)")

from changecap.inference import ChangeCaptioner  # noqa: E402
from changecap.serve import create_app  # noqa: E402


def chromium() -> str:
    """Path of a chromium binary, installed with apt-get if needed (one process at a time: a lock file)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if shutil.which("apt-get") is None:
        pytest.skip("no chromium on this machine and no apt-get to install Debian's chromium")
    with open("/tmp/changecap-chromium-install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # pytest-xdist workers: one installs, the other waits
        found = shutil.which("chromium")
        if found:
            return found
        env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"]
        if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=True)
            subprocess.run(cmd, env=env, capture_output=True, check=True)
    found = shutil.which("chromium")
    assert found, "apt-get installed chromium but it is not on PATH"
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(scc_dir: Path) -> Iterator[str]:
    app = create_app(ChangeCaptioner.from_pretrained(scc_dir, device="cpu"), "tiny semantic_cc")
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


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
