"""Collectives that model code calls inside ``forward`` (plain ``torch.distributed``; no-ops for one process).

Contrastive losses (DFM's TGCL, CLIP pretraining) compare every sample with every other sample of the *global*
batch, so a model under DDP gathers its embeddings from all processes before the similarity matrix.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Every process's ``tensor`` [B_r, ...] concatenated along dim 0 in rank order, differentiable: the gradient
    of each slice flows back to the process that owns it, summed over the processes (as CLIP-style trainers gather
    embeddings for a global similarity matrix). Batches of unequal size are padded for the collective and trimmed.
    The tensor itself for one process."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    from torch.distributed.nn.functional import all_gather

    size = torch.tensor([tensor.shape[0]], dtype=torch.long, device=tensor.device)
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    counts = [int(s.item()) for s in sizes]
    longest = max(counts)
    if tensor.shape[0] < longest:
        pad = tensor.new_zeros(longest - tensor.shape[0], *tensor.shape[1:])
        tensor = torch.cat([tensor, pad], dim=0)
    parts = all_gather(tensor)  # world_size × [longest, ...]
    return torch.cat([part[:n] for part, n in zip(parts, counts, strict=True)], dim=0)
