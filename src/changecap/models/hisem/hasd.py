"""HASD — Hierarchical Adaptive Semantic Disentanglement (``docs/hisem.md``; official ``Implement_MoE``).

Two levels of routing separate "nothing changed" from "what changed":

* image level: a linear router on the mean difference Δ = F̃2 − F̃1 sends each *whole sample* to exactly one path
  (hard routing; in training the ground-truth change flag is usually passed as ``route``);
* token level (changed path only): a DeepSeek-style sparse MoE (:mod:`.moe`) specialises on kinds of change.

The unchanged path only needs to describe a stable scene, so it is a fusion block plus a small post-norm FFN. Each
path runs on its own sub-batch; outputs are scattered back into the original sample order.

Official names (for the converter): ``router`` = ``moe.clsgate``; ``unchanged.fusion`` = ``moe.reblock1``;
``unchanged.ffn`` = ``moe.pwff``; ``changed.fusion`` = ``moe.reblock2``; ``changed.moe`` = ``moe.changemoe``;
``changed.norm`` = ``moe.layer_norm``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from changecap.models.hisem.bdam import grid_to_tokens, tokens_to_grid
from changecap.models.hisem.moe import SparseMoE, fp32_linear
from changecap.models.precision import keep_fp32

UNCHANGED, CHANGED = 0, 1  # route ids (router logit columns)


class PreActResidualBlock(nn.Module):
    """X ↦ ReLU(X + BN(Conv1×1(ReLU(BN(Conv3×3(ReLU(BN(X)))))))), all convs width-preserving with bias.

    Official ``LN_list`` (a ``ResBlock`` whose ``left`` Sequential holds BN0, ReLU1, Conv2, BN3, ReLU4, Conv5, BN6);
    here: ``bn1`` = left.0, ``conv3x3`` = left.2, ``bn2`` = left.3, ``conv1x1`` = left.5, ``bn3`` = left.6.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv3x3 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv1x1 = nn.Conv2d(channels, channels, kernel_size=1)
        self.bn3 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C, H, W] → [N, C, H, W]."""
        y = self.conv3x3(torch.relu(self.bn1(x)))
        y = self.bn3(self.conv1x1(torch.relu(self.bn2(y))))
        return torch.relu(x + y)


class FusionBlock(nn.Module):
    """Fuse(F̃1, F̃2) = LN(tokens(ResBlock(Conv1×1([grid(F̃1); grid(F̃2)])))) — merges the dates into one map.

    Official ``reblock{1,2}``: ``reduce`` = ``Conv1_list``, ``residual`` = ``LN_list``, ``norm`` = ``LN_norm``.
    """

    def __init__(self, dim: int, grid_size: int) -> None:
        super().__init__()
        self.grid_size = grid_size
        self.reduce = nn.Conv2d(2 * dim, dim, kernel_size=1)
        self.residual = PreActResidualBlock(dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
        """(F̃1, F̃2) [N, L, D] → [N, L, D]."""
        stacked = torch.cat([tokens_to_grid(f1, self.grid_size), tokens_to_grid(f2, self.grid_size)], dim=1)
        x = self.residual(self.reduce(stacked))  # [N, 2D, g, g] → [N, D, g, g]
        return self.norm(grid_to_tokens(x))  # [N, L, D]


class PositionwiseFeedForward(nn.Module):
    """Post-norm FFN: LN(x + Drop(fc2(Drop(ReLU(fc1 x))))) (official ``pwff``)."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(dropout)
        self.layer_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[..., D] → [..., D]."""
        return self.layer_norm(x + self.dropout(self.fc2(self.dropout(torch.relu(self.fc1(x))))))


class UnchangedPath(nn.Module):
    """Y_u = PWFF(Fuse_1(F̃1, F̃2)) for samples routed as unchanged (also HiSem's fusion when HASD is ablated)."""

    def __init__(self, dim: int, grid_size: int, pwff_hidden: int = 2048, dropout: float = 0.1) -> None:
        super().__init__()
        self.fusion = FusionBlock(dim, grid_size)
        self.ffn = PositionwiseFeedForward(dim, pwff_hidden, dropout)

    def forward(self, f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
        """(F̃1, F̃2) [N, L, D] → [N, L, D]."""
        return self.ffn(self.fusion(f1, f2))


class ChangedPath(nn.Module):
    """Y_c = LN(H + MoE(H)), H = Fuse_2(F̃1, F̃2), for samples routed as changed; also returns the balance loss."""

    def __init__(self, dim: int, grid_size: int, moe: SparseMoE) -> None:
        super().__init__()
        self.fusion = FusionBlock(dim, grid_size)
        self.moe = moe
        self.norm = nn.LayerNorm(dim)

    def forward(self, f1: torch.Tensor, f2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(F̃1, F̃2) [N, L, D] → (Y_c [N, L, D], balance loss 0-dim)."""
        h = self.fusion(f1, f2)  # [N, L, D]
        moe_out, aux = self.moe(h)
        return self.norm(h + moe_out), aux


class HASDOutput(NamedTuple):
    """What :class:`HASD` returns."""

    output: torch.Tensor  # Y [B, L, D], samples in input order
    router_logits: torch.Tensor  # z [B, 2] fp32 (column 1 = changed)
    route: torch.Tensor  # [B] long, the path each sample took (0 unchanged, 1 changed)
    aux_loss: torch.Tensor  # 0-dim fp32 MoE balance loss, already weighted by α (0 in eval / no changed sample)


class HASD(nn.Module):
    """Image-level hard router + unchanged path (fusion + PWFF) + changed path (fusion + sparse MoE)."""

    def __init__(
        self,
        dim: int,
        grid_size: int,
        *,
        num_experts: int = 8,
        top_k: int = 2,
        n_group: int = 4,
        topk_group: int = 2,
        n_shared_experts: int = 2,
        expert_hidden: int = 2048,
        pwff_hidden: int = 2048,
        dropout: float = 0.1,
        aux_loss_alpha: float = 0.001,
        routed_scaling_factor: float = 1.0,
    ) -> None:
        super().__init__()
        # Linear default init is kaiming_uniform_(a=√5), the official router init. No bias (official).
        self.router = keep_fp32(nn.Linear(dim, 2, bias=False))  # read by fp32_linear
        self.unchanged = UnchangedPath(dim, grid_size, pwff_hidden, dropout)
        moe = SparseMoE(
            dim,
            num_experts=num_experts,
            top_k=top_k,
            n_group=n_group,
            topk_group=topk_group,
            expert_hidden=expert_hidden,
            n_shared_experts=n_shared_experts,
            routed_scaling_factor=routed_scaling_factor,
            aux_loss_alpha=aux_loss_alpha,
        )
        self.changed = ChangedPath(dim, grid_size, moe)
        # Dense routing runs both paths on every pair and keeps each pair's own (same values, no data-dependent
        # shapes) for graph export (ONNX); off by default: it does the work twice.
        self.dense_routing = False

    def router_logits(self, f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
        """z = W_r · mean_t(F̃2 − F̃1) in fp32: [B, 2]. Δ is not detached (the router loss trains BDAM too)."""
        pooled = (f2 - f1).mean(dim=1)  # [B, D] global average over the grid
        return fp32_linear(pooled, self.router.weight)  # [B, 2]

    def forward(self, f1: torch.Tensor, f2: torch.Tensor, route: torch.Tensor | None = None) -> HASDOutput:
        """(F̃1, F̃2) [B, L, D] → :class:`HASDOutput`.

        ``route`` ([B] long or bool, 1 = changed) forces the path of each sample — the trainer passes the ground-truth
        change flag during the ground-truth routing epochs; ``None`` routes by ``argmax`` of the router logits (in
        any mode). The router logits are computed either way so the router can be trained with a classification loss.
        """
        b = f1.shape[0]
        logits = self.router_logits(f1, f2)
        if route is None:
            route = logits.argmax(dim=-1)  # [B]
        else:
            if route.shape != (b,):
                raise ValueError(f"route must have shape [{b}], got {list(route.shape)}")
            route = route.to(device=f1.device, dtype=torch.long)
            if bool(((route != UNCHANGED) & (route != CHANGED)).any()):
                raise ValueError("route values must be 0 (unchanged) or 1 (changed)")
        if self.dense_routing:
            # both branches on every pair, then each pair takes its own (no data-dependent shapes: graph export)
            y_u = self.unchanged(f1, f2)  # [B, L, D]
            y_c, aux = self.changed(f1, f2)
            dtype = torch.promote_types(y_u.dtype, y_c.dtype)
            out = torch.where((route == CHANGED)[:, None, None], y_c.to(dtype), y_u.to(dtype))  # [B, L, D]
            return HASDOutput(out, logits, route, aux)
        unchanged_idx = (route == UNCHANGED).nonzero().squeeze(1)  # [B_u]
        changed_idx = (route == CHANGED).nonzero().squeeze(1)  # [B_c]

        # Empty sub-batches are skipped (BatchNorm cannot run on zero samples in training mode).
        parts: list[tuple[torch.Tensor, torch.Tensor]] = []
        aux = torch.zeros((), dtype=torch.float32, device=f1.device)
        if unchanged_idx.numel() > 0:
            parts.append((unchanged_idx, self.unchanged(f1[unchanged_idx], f2[unchanged_idx])))
        if changed_idx.numel() > 0:
            y_c, aux = self.changed(f1[changed_idx], f2[changed_idx])
            parts.append((changed_idx, y_c))

        dtype = f1.dtype
        for _, y in parts:
            dtype = torch.promote_types(dtype, y.dtype)
        out = torch.zeros(f1.shape, dtype=dtype, device=f1.device)  # [B, L, D]
        for idx, y in parts:
            out = out.index_copy(0, idx, y.to(dtype))  # out-of-place: keeps autograd simple
        return HASDOutput(out, logits, route, aux)
