"""Executed FLOPs without ``FlopCounterMode``'s module tracker (shared by the speed benchmarks).

The tracker's hooks fail inside some transformers modules (BLIP-2's Q-Former under ``no_grad``); the per-op formulas
themselves (``torch.utils.flop_counter.flop_registry``) do not, so the totals can still be counted.
"""

from __future__ import annotations

from collections.abc import Callable


def count_total_flops(fn: Callable[[], object]) -> float:
    """Executed FLOPs of ``fn`` by ``FlopCounterMode``'s own per-op formulas (``flop_registry``), without its module
    tracker: totals only."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    total = 0

    class Counter(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
            nonlocal total
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            formula = flop_registry.get(func._overloadpacket)
            if formula is not None:
                total += formula(*args, **kwargs, out_val=out)
            return out

    with Counter():
        fn()
    return float(total)
