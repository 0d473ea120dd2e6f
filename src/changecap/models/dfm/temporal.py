"""The spatio-temporal feature extractor of DFM (``docs/dfm.md``, eq. 7) — **a documented deviation**.

The paper's baseline suggests RSCaMa's encoder (state-space models conditioned on the spatial difference, a temporal
SSM over interleaved tokens, then a convolutional fusion of the two dates). changecap takes no Mamba dependency, so
this is a Transformer substitute:

* a learned position per grid cell added to both dates' tokens;
* per layer: each date's tokens attend to themselves with queries and keys conditioned on the projected difference
  E_2 − E_1 (RSCaMa's difference-conditioned spatial SSM), then to the other date's tokens (its temporal SSM), then
  an FFN — post-norm residuals throughout;
* fusion as RSCaMa's: the two dates concatenated on channels → a 1×1 projection → a residual 3×3 convolution block on
  the token grid → LayerNorm → F_st [B, N, D].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from changecap.models.dfm.config import TemporalConfig
from changecap.models.parts.attention import MultiheadAttention


class TemporalLayer(nn.Module):
    """Both dates [B, N, D] → both dates [B, N, D]: difference-conditioned self-attention, cross-date attention, FFN."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.diff_proj = nn.Linear(dim, dim)
        # changecap's attention: nn.MultiheadAttention's parameters (in_proj_*, out_proj) on fused SDPA, with a batch
        # that stays dynamic when traced for ONNX export
        self.self_attn = MultiheadAttention(dim, heads, dropout)
        self.cross_attn = MultiheadAttention(dim, heads, dropout)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn_dim, dim))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(3))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cond = self.diff_proj(x2 - x1).repeat(2, 1, 1)  # [2B, N, D]: the same difference conditions both dates
        x = torch.cat([x1, x2], dim=0)  # [2B, N, D]: rows 0..B−1 before, B..2B−1 after
        q = x + cond
        sa = self.self_attn
        x = self.norms[0](x + self.dropout(sa.attend(sa.project_q(q), *sa.project_k_v(q, x))))  # keys q, values x
        other = x.unflatten(0, (2, -1)).flip(0).flatten(0, 1)  # [2B, N, D]: each row's other date
        x = self.norms[1](x + self.dropout(self.cross_attn(x, other)))
        x = self.norms[2](x + self.dropout(self.ffn(x)))
        dates = x.unflatten(0, (2, -1))  # [2, B, N, D]
        return dates[0], dates[1]


class SpatioTemporalExtractor(nn.Module):
    """(E_1, E_2) [B, N, D] on a G×G grid → F_st [B, N, D]."""

    def __init__(self, dim: int, grid_size: int, config: TemporalConfig) -> None:
        super().__init__()
        self.grid_size = grid_size
        self.position = nn.Parameter(torch.zeros(grid_size * grid_size, dim))  # [N, D], one per grid cell
        nn.init.trunc_normal_(self.position, std=0.02)
        self.layers = nn.ModuleList(
            TemporalLayer(dim, config.heads, config.ffn_mult * dim, config.dropout) for _ in range(config.layers)
        )
        self.fuse = nn.Linear(2 * dim, dim)  # the 1×1 convolution over the concatenated dates
        self.conv1 = nn.Conv2d(dim, dim, 3, padding=1)
        self.conv2 = nn.Conv2d(dim, dim, 3, padding=1)
        self.norm = nn.LayerNorm(dim)

    def forward(self, e1: torch.Tensor, e2: torch.Tensor) -> torch.Tensor:
        x1, x2 = e1 + self.position, e2 + self.position  # [B, N, D]
        for layer in self.layers:
            x1, x2 = layer(x1, x2)
        h = self.fuse(torch.cat([x1, x2], dim=-1))  # [B, N, D]
        g = self.grid_size
        grid = h.transpose(1, 2).unflatten(2, (g, g))  # [B, D, G, G]
        grid = grid + self.conv2(F.gelu(self.conv1(grid)))  # residual convolution block
        return self.norm(grid.flatten(2).transpose(1, 2))  # [B, N, D]
