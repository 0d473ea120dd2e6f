"""``changecap`` entry point.

Each sub-command lives in its own module ``changecap.cli.cmd_<name>`` exposing ``register(subparsers)``; the
module sets ``func`` on its parser with ``set_defaults(func=...)``, a callable ``(args) -> int``. User errors
(:class:`changecap.errors.ChangeCapError`, missing files) are printed as one line on stderr and exit with status 2;
anything else is a bug and keeps its traceback. Ctrl-C exits with 130 and SIGTERM with 143, both through the same
cleanup (SIGTERM is raised as :class:`Terminated`, a ``KeyboardInterrupt``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from types import FrameType

from changecap.errors import ChangeCapError
from changecap.version import __version__

# Order = order in --help. Command modules import their heavy dependencies (torch, optional extras) inside
# their run function, so building the parser stays fast and a missing extra fails only the command that needs it.
COMMAND_MODULES: tuple[str, ...] = (
    "info",
    "summary",
    "synth",
    "vocab",
    "data",
    "eval_captions",
    "baselines",
    "train",
    "evaluate",
    "compare",
    "caption",
    "scene",
    "serve",
    "export",
    "convert",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="changecap", description="Remote sensing image change captioning toolkit.")
    parser.add_argument("--version", action="version", version=f"changecap {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"changecap.cli.cmd_{name}").register(sub)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C, so the same cleanup runs (temporary files removed, partial
    records kept under a visible name and their place printed) before the process exits with 143."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one clean exit: a second SIGTERM must not cut the cleanup short
    raise Terminated


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into :class:`Terminated` while a command runs (main thread only; the old handler is restored)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):  # no sub-command given: argparse sets no handler
        parser.print_help()
        return 1
    try:
        with _sigterm_as_interrupt():
            return int(args.func(args) or 0)
    except ChangeCapError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print(f"error: {e.filename or ''}: file not found", file=sys.stderr)
        return 2
    except Terminated:
        print("terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
