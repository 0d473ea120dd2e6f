"""``changecap serve``: a warning when the API becomes reachable from the network, ``--allowed-hosts`` and
``--max-image-pixels`` reach the server, and bad option values are one-line errors (uvicorn itself is not run)."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("fastapi", reason="changecap serve needs the 'serve' extra (FastAPI)")
uvicorn = pytest.importorskip("uvicorn", reason="changecap serve needs the 'serve' extra (uvicorn)")
pytest.importorskip("httpx", reason="FastAPI's test client needs httpx")
from fastapi.testclient import TestClient  # noqa: E402

from changecap.cli import cmd_serve  # noqa: E402
from changecap.cli.main import main  # noqa: E402
from changecap.inference import ChangeCaptioner  # noqa: E402
from changecap.serve import app as app_module  # noqa: E402
from tests.serve.fakes import FakeCaptioner  # noqa: E402


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What ``uvicorn.run`` was called with, instead of serving (and a stand-in for the model it would load)."""
    calls: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.update(app=app, **kw))
    monkeypatch.setattr(ChangeCaptioner, "from_pretrained", classmethod(lambda cls, *a, **kw: FakeCaptioner()))
    return calls


def serve(*argv: str) -> int:
    return main(["serve", "--model", "some/model", "--device", "cpu", *argv])


def test_a_host_reachable_from_the_network_warns(
    served: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert serve("--host", "0.0.0.0", "--allowed-hosts", "lab.example, gis.example") == 0
    err = capsys.readouterr().err
    assert err.startswith("warning: --host 0.0.0.0 makes this unauthenticated API reachable from the network")
    assert served["host"] == "0.0.0.0" and served["log_config"]["loggers"]["changecap.serve"]["handlers"]
    client = TestClient(served["app"], base_url="http://localhost")
    for header, status in (("lab.example:8000", 200), ("gis.example", 200), ("10.1.2.3:8000", 200),
                           ("rebind.example:8000", 400)):  # fmt: skip
        assert client.get("/api/health", headers={"host": header}).status_code == status, header


def test_loopback_serves_without_a_warning_and_passes_the_limits(
    served: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert serve("--max-image-pixels", "1000", "--max-upload-mb", "2") == 0
    assert "warning" not in capsys.readouterr().err
    health = TestClient(served["app"], base_url="http://127.0.0.1:8000").get("/api/health").json()
    assert (health["max_image_pixels"], health["max_upload_mb"]) == (1000, 2.0)
    assert cmd_serve.DEFAULT_MAX_IMAGE_PIXELS == app_module.DEFAULT_MAX_IMAGE_PIXELS


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--max-image-pixels", "0"), "error: --max-image-pixels must be > 0, got 0\n"),
        (("--max-upload-mb", "-1"), "error: --max-upload-mb must be > 0, got -1.0\n"),
        (("--port", "70000"), "error: --port must be in 1..65535, got 70000\n"),
    ],
)
def test_bad_values_are_one_line_errors(
    served: dict[str, Any], capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], message: str
) -> None:
    assert serve(*argv) == 2
    assert capsys.readouterr().err == message and not served
