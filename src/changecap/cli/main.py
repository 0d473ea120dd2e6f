"""``changecap`` entry point.

Each sub-command lives in its own module ``changecap.cli.cmd_<name>`` exposing ``register(subparsers)``; the
module sets ``func`` on its parser with ``set_defaults(func=...)``, a callable ``(args) -> int``. User errors
(:class:`changecap.errors.ChangeCapError`, missing files) are printed as one line on stderr and exit with status 2;
anything else is a bug and keeps its traceback. Ctrl-C exits with 130 and SIGTERM with 143, both through the same
cleanup (SIGTERM is raised as :class:`~changecap.cli.signals.Terminated`, a ``KeyboardInterrupt``).
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
from collections.abc import Sequence

from changecap.cli.signals import Terminated, sigterm_as_interrupt
from changecap.cli.threads import apply_threads, resolve_threads
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
    "pretrain",
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):  # no sub-command given: argparse sets no handler
        parser.print_help()
        return 1
    restore: int | None = None
    try:
        with sigterm_as_interrupt():
            threads = resolve_threads(args)  # --threads, or its default: the one place that applies it
            if threads is not None:
                import torch

                restore = torch.get_num_threads()  # for callers that run several commands in one process
                apply_threads(threads)
                args.threads = threads  # the number the command hands on (onnxruntime sessions)
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
    finally:
        if restore is not None:
            import torch

            torch.set_num_threads(restore)


if __name__ == "__main__":
    raise SystemExit(main())
