"""Timing helper shared by the benchmark scripts (each script runs on its own: ``python benchmarks/<name>.py``)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_seconds(
    fn: Callable[[], object], repeat: int, warmup: int = 1, sync: Callable[[], None] | None = None
) -> float:
    """Median wall time of ``repeat`` calls of ``fn`` after ``warmup`` untimed ones. ``sync`` (e.g.
    ``torch.cuda.synchronize``) is called after each timed call so asynchronous device work is counted."""
    for _ in range(warmup):
        fn()
    if sync:
        sync()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
