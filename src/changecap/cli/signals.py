"""SIGTERM handled as Ctrl-C is: raised as :class:`Terminated` (a ``KeyboardInterrupt``) in the main thread, so the
same cleanup runs (temporary files removed, partial records kept under a visible name and their place printed)
before the process exits with 143. The CLI entry (:func:`changecap.cli.main.main`) installs it around every command;
a command that says what it kept tells the two apart with ``isinstance(e, Terminated)``.

It lives in a module of its own so that ``python -m changecap.cli.main`` (where the entry module runs as
``__main__``) and the commands see one and the same class.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, like Ctrl-C."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one clean exit: a second SIGTERM must not cut the cleanup short
    raise Terminated


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into :class:`Terminated` in the block (main thread only; the old handler is restored)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
