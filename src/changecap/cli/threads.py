"""``--threads N``: the CPU threads of every command that runs a model, applied in one place (``cli.main``).

Default (no ``--threads``): torch's own default (the physical cores, or ``OMP_NUM_THREADS`` when set), but never
more than the CPUs that are idle when the command starts: the CPUs this process may use minus the 1-minute load
average, at least 1. Whether other processes will stay busy is not knowable in advance; the load at start is the
best guess, and it avoids the worst case: more compute threads than free cores, where every thread waits for the
others at each operation (on a shared 2-core machine, 16 pairs took 1.41 s on 2 threads and 0.18 s on 1). ``train``
keeps torch's default unless ``--threads`` is given (a long run outlives the load it starts under).

The number goes to torch (``set_num_threads``; ``set_num_interop_threads`` where the process has not started
inter-op work yet) and to onnxruntime sessions (``intra_op_num_threads``, ``caption --backend onnx``).
"""

from __future__ import annotations

import argparse
import contextlib
import os

from changecap.errors import ChangeCapError


def add_threads_argument(p: argparse.ArgumentParser, auto_default: bool = True) -> None:
    """``--threads N``; ``auto_default`` False leaves torch's default when the option is not given."""
    default = "the idle CPUs at start, at most torch's default" if auto_default else "torch's default"
    p.add_argument("--threads", type=int, default=None, metavar="N", help=f"CPU threads (default: {default})")
    p.set_defaults(threads_auto_default=auto_default)


def idle_cpus() -> int:
    """The CPUs this process may run on minus the 1-minute load average (rounded), at least 1."""
    # platform probes (both are Unix-only), not a model's
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, cpus - round(load))


def resolve_threads(args: argparse.Namespace) -> int | None:
    """The thread count a parsed command line asks for (None: the command takes no ``--threads``, or keeps torch's
    default). A value below 1 is a user error."""
    if not hasattr(args, "threads"):  # the parsed command has no --threads option
        return None
    if args.threads is not None:
        if args.threads < 1:
            raise ChangeCapError(f"--threads must be >= 1, got {args.threads}")
        return int(args.threads)
    if not getattr(args, "threads_auto_default", False):
        return None
    import torch

    return max(1, min(torch.get_num_threads(), idle_cpus()))


def apply_threads(n: int) -> None:
    """Set torch's intra-op threads to ``n``, and its inter-op threads where this process still allows it (torch
    takes that setting once, before any inter-op work)."""
    import torch

    torch.set_num_threads(n)
    # torch refuses a second setting, or one after inter-op work started (a second command in one process)
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(n)
