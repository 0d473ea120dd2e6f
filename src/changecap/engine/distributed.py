"""Process-group set-up for ``torchrun`` (plain ``torch.distributed``, no wrapper library).

``torchrun --nproc-per-node N -m changecap train cfg.yaml`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; a
plain ``python`` launch has none and runs as a single process. The backend is NCCL on CUDA and gloo on CPU.

A caller may also initialise ``torch.distributed`` itself before training (any store, any backend): the run then
joins that group, whatever its size. A group of one runs every collective and the DDP wrapper for real, which is
how ``benchmarks/gpu_check.py`` exercises NCCL on a single GPU; the caller also tears its group down.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from changecap.errors import ConfigError
from changecap.models.device import device_problem
from changecap.models.parallel import all_gather_with_grad  # lives with the models, which gather inside forward

__all__ = [
    "DistContext",
    "all_gather_with_grad",
    "all_reduce_sum",
    "barrier",
    "broadcast_object",
    "cleanup_distributed",
    "gather_objects",
    "init_distributed",
    "resolve_device",
]


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    group: bool = False  # a torch.distributed process group is initialised (a world of one included)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether collectives run and the trainer wraps the model in DDP."""
        return self.group or self.world_size > 1


def resolve_device(
    name: str, local_rank: int, field: str = "train.device", path: str | os.PathLike[str] | None = None
) -> torch.device:
    """``auto`` → ``cuda:<local_rank>`` when CUDA is available, else ``cpu``; ``cuda`` → ``cuda:<local_rank>``.

    Checked by :func:`~changecap.models.device.parse_device`'s rules: a one-line ConfigError naming ``field`` (and
    the config file ``path``) when this machine lacks the device or has no GPU number ``local_rank``.
    """
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if name not in ("auto", "cuda"):
        raise ConfigError(field, f"expected auto, cpu or cuda, got {name!r}", path=path)
    device = torch.device("cuda", local_rank)
    problem = device_problem(device)
    if problem is not None:
        raise ConfigError(field, f"{name} (process {local_rank} of this machine needs {device}): {problem}", path=path)
    return device


def init_distributed(
    device: str = "auto", field: str = "train.device", path: str | os.PathLike[str] | None = None
) -> DistContext:
    """Join the process group when launched by torchrun (idempotent), or the group the caller initialised;
    otherwise a world of one without collectives. ``field`` and ``path`` name where ``device`` came from in errors
    (see :func:`resolve_device`)."""
    joined = group_initialized()
    if joined:  # the caller's (or an earlier call's) group: its numbers, not the environment's
        world_size, rank = dist.get_world_size(), dist.get_rank()
    else:
        world_size, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank, field, path)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world_size > 1 and not joined:
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        joined = True
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=dev, group=joined)


def group_initialized() -> bool:
    """Whether a torch.distributed process group exists in this process."""
    return dist.is_available() and dist.is_initialized()


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum over processes, in place (no-op for one process)."""
    if ctx.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_object(obj: Any, ctx: DistContext, src: int = 0) -> Any:
    """Rank ``src``'s Python object on every process."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """Every process's object, in rank order, on every process."""
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()
