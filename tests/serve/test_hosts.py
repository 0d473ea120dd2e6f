"""The ``Host`` check of ``changecap serve``: localhost, loopback addresses and the bound address are answered,
other names (a DNS-rebinding page's) get 400 with a message unless ``--allowed-hosts`` names them; a server bound to
every interface also answers IP addresses."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi", reason="changecap serve needs the 'serve' extra (FastAPI)")
pytest.importorskip("httpx", reason="FastAPI's test client needs httpx")
from fastapi.testclient import TestClient  # noqa: E402

from changecap.serve import create_app  # noqa: E402
from changecap.serve.hosts import host_of, is_loopback  # noqa: E402
from tests.serve.fakes import FakeCaptioner  # noqa: E402


@pytest.mark.parametrize(
    ("header", "host"),
    [
        ("localhost:8000", "localhost"),
        ("LocalHost.", "localhost"),
        ("127.0.0.1", "127.0.0.1"),
        ("[::1]:8000", "::1"),
        ("[::1]", "::1"),
        ("::1", "::1"),
        ("lab.example.org:80", "lab.example.org"),
    ],
)
def test_host_of_a_header(header: str, host: str) -> None:
    assert host_of(header) == host


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.8.0.1", True), ("localhost", True), ("::1", True), ("[::1]", True),
     ("0.0.0.0", False), ("::", False), ("192.168.1.7", False), ("myhost", False)],
)  # fmt: skip
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("bound", "allowed", "header", "answered"),
    [
        ("127.0.0.1", (), "localhost:8000", True),
        ("127.0.0.1", (), "127.0.0.1:8000", True),
        ("127.0.0.1", (), "[::1]:8000", True),
        ("127.0.0.1", (), "rebind.example:8000", False),
        ("127.0.0.1", (), "rebind.example", False),
        ("127.0.0.1", (), "192.168.1.7:8000", False),
        ("127.0.0.1", ("lab.example", "gis.example"), "LAB.example:8000", True),
        ("127.0.0.1", ("lab.example",), "rebind.example:8000", False),
        ("127.0.0.1", ("*",), "anything.example", True),
        ("0.0.0.0", (), "192.168.1.7:8000", True),
        ("0.0.0.0", (), "[fe80::1]:8000", True),
        ("0.0.0.0", (), "rebind.example:8000", False),
        ("192.168.1.7", (), "192.168.1.7:8000", True),
        ("192.168.1.7", (), "192.168.1.8:8000", False),
        ("myhost", (), "myhost:8000", True),
    ],
)
def test_requests_for_other_hosts_are_refused(
    bound: str, allowed: tuple[str, ...], header: str, answered: bool
) -> None:
    app = create_app(FakeCaptioner(), "fake", host=bound, allowed_hosts=allowed, samples=[])
    client = TestClient(app, base_url="http://localhost")
    for method, path in (("GET", "/api/health"), ("POST", "/api/caption"), ("GET", "/docs")):
        r = client.request(method, path, headers={"host": header})
        if answered:  # an empty POST is a 400 of its own: not a multipart form
            assert (r.status_code, "Host header" in r.text) == ((200 if method == "GET" else 400), False)
        else:
            assert r.status_code == 400 and r.headers["connection"] == "close"
            detail = r.json()["detail"]
            assert detail.startswith(f"Host header '{header}' is not allowed") and "--allowed-hosts" in detail
