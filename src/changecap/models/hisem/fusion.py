"""HiSem's fusion: 2-D position embedding → BDAM → HASD → LN(F̃1 + F̃2 + Y) (``docs/hisem.md``).

This is the official ``AttentiveEncoder`` (checkpoint entry ``encoder_trans_dict``). It turns the two dates' CLIP
patch tokens into the decoder memory and, when HASD is on, also returns the image-level router logits that the
trainer supervises with the change flag.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from changecap.models.hisem.bdam import BDAM
from changecap.models.hisem.hasd import HASD, UnchangedPath
from changecap.models.parts.position import PositionEmbedding2D
from changecap.schema import from_dict, require


@dataclass
class HiSemFusionConfig:
    """Hyperparameters of :class:`HiSemFusion`; the defaults are the paper configuration (LEVIR-CC, ViT-B/16)."""

    dim: int = 768  # token width D (= CLIP ViT-B/16 width); must be even (two half-width position tables)
    grid_size: int = 14  # tokens per side of the square patch grid, L = grid_size² (224 / 16)
    bdam_layers: int = 3  # number of BDAM layers
    heads: int = 8  # attention heads of BDAM's bidirectional attention (head dim = dim / heads)
    modulator_reduction: int = 4  # the modulator's gate MLP hidden size is dim // modulator_reduction
    diff_lambda: float = 0.9  # λ of the differential attention, a constant (not learned)
    add_scale_init: float = 1.0  # initial κ_add, the learnable scale of the "added" diagonal bias
    del_scale_init: float = 0.5  # initial κ_del, the learnable scale of the "deleted" diagonal bias
    num_experts: int = 8  # routed experts of the changed path's MoE
    top_k: int = 2  # experts per token
    n_group: int = 4  # contiguous expert groups for group-limited routing
    topk_group: int = 2  # groups kept per token before the top-k
    n_shared_experts: int = 2  # shared expert hidden size = dim · n_shared_experts (0: no shared expert)
    expert_hidden: int = 2048  # hidden size of each routed SwiGLU expert
    pwff_hidden: int = 2048  # hidden size of the unchanged path's feed-forward
    dropout: float = 0.1  # dropout of the unchanged path's feed-forward (BDAM has none)
    aux_loss_alpha: float = 0.001  # weight α of the MoE sequence-level balance loss (already applied to aux_loss)
    routed_scaling_factor: float = 1.0  # multiplier of the routed experts' (unnormalised) sigmoid weights
    use_bdam: bool = True  # False: BDAM is the identity (ablation "+HASD only")
    use_hasd: bool = True  # False: the unchanged-path block for every sample, no router (ablation "+BDAM")
    official_unused_params: bool = False  # also create the official never-read LayerNorms (norm_add / norm_del)

    @property
    def num_tokens(self) -> int:
        """L = grid_size²."""
        return self.grid_size * self.grid_size

    def validate(self, prefix: str = "fusion") -> None:
        """Raise :class:`~changecap.errors.ConfigError` naming ``<prefix>.<field>`` for the first invalid value."""

        def f(name: str) -> str:
            return f"{prefix}.{name}"

        positive = ("dim", "grid_size", "bdam_layers", "heads", "modulator_reduction", "num_experts", "top_k",
                    "n_group", "topk_group", "expert_hidden", "pwff_hidden")  # fmt: skip
        for name in positive:
            value = getattr(self, name)
            require(value > 0, f(name), f"must be a positive integer, got {value}")
        require(self.dim % 2 == 0, f("dim"), f"must be even (two position tables of width dim/2), got {self.dim}")
        require(self.dim % self.heads == 0, f("heads"), f"must divide dim={self.dim}, got {self.heads}")
        require(
            self.modulator_reduction <= self.dim,
            f("modulator_reduction"),
            f"must be at most dim={self.dim} (gate hidden size dim // reduction ≥ 1), got {self.modulator_reduction}",
        )
        require(
            self.top_k <= self.num_experts, f("top_k"), f"must be ≤ num_experts={self.num_experts}, got {self.top_k}"
        )
        require(
            self.num_experts % self.n_group == 0,
            f("n_group"),
            f"must divide num_experts={self.num_experts}, got {self.n_group}",
        )
        require(
            self.topk_group <= self.n_group, f("topk_group"), f"must be ≤ n_group={self.n_group}, got {self.topk_group}"
        )
        eligible = self.topk_group * (self.num_experts // self.n_group)
        # Choice: the official code would silently pick zero-weight experts from masked groups; we reject it.
        require(
            self.top_k <= eligible,
            f("top_k"),
            f"must be ≤ topk_group × experts per group = {eligible} (eligible experts), got {self.top_k}",
        )
        require(self.n_shared_experts >= 0, f("n_shared_experts"), f"must be ≥ 0, got {self.n_shared_experts}")
        for name in ("diff_lambda", "add_scale_init", "del_scale_init"):
            value = getattr(self, name)
            require(math.isfinite(value), f(name), f"must be a finite number, got {value}")
        require(0.0 <= self.dropout < 1.0, f("dropout"), f"must be in [0, 1), got {self.dropout}")
        require(
            math.isfinite(self.aux_loss_alpha) and self.aux_loss_alpha >= 0,
            f("aux_loss_alpha"),
            f"must be a finite number ≥ 0, got {self.aux_loss_alpha}",
        )
        require(
            math.isfinite(self.routed_scaling_factor) and self.routed_scaling_factor > 0,
            f("routed_scaling_factor"),
            f"must be a finite number > 0, got {self.routed_scaling_factor}",
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Any, prefix: str = "fusion") -> HiSemFusionConfig:
        """Strict inverse of :meth:`to_dict`: unknown keys, wrong types and bad values raise ConfigError naming
        ``<prefix>.<field>``; missing keys take their defaults."""
        return from_dict(cls, d, prefix)


class HiSemFusion(nn.Module):
    """Position embedding → BDAM → HASD → final LayerNorm; the model contract's ``model.fusion``.

    ``forward(f_before, f_after, route=None) -> (memory [B, L, D], router_logits [B, 2] | None)``. After each call,
    ``self.aux_loss`` holds the 0-dim weighted MoE balance loss (zero in eval mode, without changed samples or without
    HASD) and ``self.last_route`` the [B] long path taken (0 unchanged, 1 changed). Storing the loss on the module
    keeps the forward signature identical for fusions without an MoE; it holds the graph only until the next call.
    """

    def __init__(self, config: HiSemFusionConfig | None = None) -> None:
        super().__init__()
        config = config if config is not None else HiSemFusionConfig()
        config.validate()
        self.config = config
        c = config
        self.position = PositionEmbedding2D(c.grid_size, c.dim)  # official h_embedding / w_embedding
        self.bdam: BDAM | None = None  # official diff_attn
        if c.use_bdam:
            self.bdam = BDAM(
                c.dim,
                c.grid_size,
                layers=c.bdam_layers,
                heads=c.heads,
                modulator_reduction=c.modulator_reduction,
                diff_lambda=c.diff_lambda,
                add_scale_init=c.add_scale_init,
                del_scale_init=c.del_scale_init,
                official_unused_params=c.official_unused_params,
            )
        self.hasd: HASD | None = None  # official moe
        self.plain_fusion: UnchangedPath | None = None  # replaces HASD in the "no HASD" ablation (no official key)
        if c.use_hasd:
            self.hasd = HASD(
                c.dim,
                c.grid_size,
                num_experts=c.num_experts,
                top_k=c.top_k,
                n_group=c.n_group,
                topk_group=c.topk_group,
                n_shared_experts=c.n_shared_experts,
                expert_hidden=c.expert_hidden,
                pwff_hidden=c.pwff_hidden,
                dropout=c.dropout,
                aux_loss_alpha=c.aux_loss_alpha,
                routed_scaling_factor=c.routed_scaling_factor,
            )
        else:
            self.plain_fusion = UnchangedPath(c.dim, c.grid_size, c.pwff_hidden, c.dropout)
        self.final_norm = nn.LayerNorm(c.dim)  # official layer_norm
        self.aux_loss: torch.Tensor = torch.zeros(())
        self.last_route: torch.Tensor | None = None

    def forward(
        self, f_before: torch.Tensor, f_after: torch.Tensor, route: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Patch tokens of both dates [B, L, D] (row-major grid) → (memory [B, L, D], router logits [B, 2] | None).

        ``route`` ([B] long/bool, 1 = changed) forces HASD's path per sample (ground-truth routing in training);
        ``None`` routes by the router's argmax. Ignored when HASD is disabled.
        """
        c = self.config
        if f_before.shape != f_after.shape or f_before.ndim != 3 or f_before.shape[1:] != (c.num_tokens, c.dim):
            raise ValueError(
                f"expected two [B, {c.num_tokens}, {c.dim}] token tensors, got {list(f_before.shape)} and "
                f"{list(f_after.shape)}"
            )
        pos = self.position()  # [L, D], shared by both dates
        f1, f2 = f_before + pos, f_after + pos  # [B, L, D]
        if self.bdam is not None:
            f1, f2 = self.bdam(f1, f2)
        router_logits: torch.Tensor | None = None
        if self.hasd is not None:
            out = self.hasd(f1, f2, route)
            y, router_logits, self.last_route, self.aux_loss = out.output, out.router_logits, out.route, out.aux_loss
        else:
            assert self.plain_fusion is not None
            y = self.plain_fusion(f1, f2)
            self.last_route = torch.zeros(f1.shape[0], dtype=torch.long, device=f1.device)  # all "unchanged"
            self.aux_loss = torch.zeros((), dtype=torch.float32, device=f1.device)
        memory = self.final_norm(f1 + f2 + y)  # [B, L, D]
        return memory, router_logits
