"""The inference fixtures (tiny saved models) for the server tests, and a real uvicorn server on a free loopback
port for the tests that need one (HTTP behaviour the test client skips: bodies sent without waiting, disconnects,
an event loop shared by every request)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.inference.conftest import _one_thread, data_root, model_dir, scc_dir, vocab  # noqa: F401


@pytest.fixture
def serve_app() -> Iterator[Callable[[Any], str]]:
    """``start(app) -> "http://127.0.0.1:PORT"``: runs ``app`` under uvicorn in a thread until the test ends.

    The socket is bound here (port 0) and handed to uvicorn, so no other process can take the port in between;
    ``log_config=None`` leaves uvicorn's loggers propagating to the root logger, where ``caplog`` sees them."""
    uvicorn = pytest.importorskip("uvicorn", reason="changecap serve needs the 'serve' extra (uvicorn)")
    running: list[tuple[Any, threading.Thread, socket.socket]] = []

    def start(app: Any) -> str:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
        srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, log_level="info"))
        thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        running.append((srv, thread, sock))
        deadline = time.monotonic() + 30
        while not srv.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)
        return f"http://127.0.0.1:{port}"

    yield start
    for srv, thread, sock in running:
        srv.should_exit = True
        thread.join(timeout=10)
        sock.close()

