"""BCSF — the bi-temporal change semantic filter of Semantic-CC (``docs/semantic_cc.md``, eqs. (2)–(3)).

Inside the shared SAM encoder both dates run as one batch, so nothing in a plain ViT block lets one date see the
other. A BCSF, placed after an encoder block, lets each date's features be re-weighted by the pair:

  Φ_sf(x, y)  = x ⊙ σ(w_sfᵀ [x ; y])            per-pixel gate from the channel concatenation (shared by both dates)
  Φ_cf-k(x, y) = x ⊙ σ(u_kᵀ [x ; y]_flat)       per-channel gate from the spatial concatenation, one gate per date
  F_k ← F_k + FFN_sf(Φ_sf(F_k, F_other)) + FFN_cf-k(Φ_cf-k(F_k, F_other))

The spatial gate says *where* the pair makes a location interesting, the channel gate *which* feature channels.

Two forms (the paper's and the released code's):

* ``"paper"`` — the filtered feature comes first in every concatenation ([self ; other]); one FFN for the spatial
  branch and two separately parameterised FFNs for the channel branches; the spatial gate has a bias.
* ``"code"`` — as the released code: one spatial gate map computed from [F1 ; F2] is used for both dates, both
  channel gates read [F1 ; F2], one FFN is shared by the two channel branches, the spatial gate has no bias, and an
  extra gate (``down_channel``) exists that the forward pass never uses.

Layout: the module takes SAM's channels-last block output [2B, H, W, C] (rows 0..B−1 = before, B..2B−1 = after), so
the released code's 1×1 convolutions are per-pixel :class:`~torch.nn.Linear` layers here (a [out, in, 1, 1] conv
kernel is the same numbers as a [out, in] Linear weight).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from changecap.errors import ModelError

BCSFForm = Literal["paper", "code"]


def _pointwise_ffn(dim: int) -> nn.Sequential:
    """FFN of the released code: 1×1 conv c→c, GELU, 1×1 conv c→c (both with bias), as per-pixel Linear layers."""
    return nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))


class BCSF(nn.Module):
    """Bi-temporal change semantic filter over a [2B, H, W, C] pair batch; returns the same shape.

    Parameters: ``spatial_gate`` (Linear 2C → 1), ``channel_gates`` (two Linear 2·H·W → 1, index 0 = before,
    1 = after), ``spatial_ffn``, ``channel_ffns`` (two FFNs in the paper form, one shared FFN in the code form) and,
    in the code form only, the unused ``down_channel``.
    """

    def __init__(self, dim: int, grid_size: int, form: BCSFForm = "paper") -> None:
        super().__init__()
        if form not in ("paper", "code"):
            raise ModelError(f"BCSF form must be 'paper' or 'code', got {form!r}")
        self.dim = dim
        self.grid_size = grid_size
        self.form: BCSFForm = form
        tokens = grid_size * grid_size
        # Why a bias only in the paper form: the released gate conv has none; eq. (2) is an affine map.
        self.spatial_gate = nn.Linear(2 * dim, 1, bias=form == "paper")
        # The channel gate reads the flattened spatial axis of both dates (2·H·W values per channel), which ties the
        # module to one grid size.
        self.channel_gates = nn.ModuleList(nn.Linear(2 * tokens, 1) for _ in range(2))
        self.spatial_ffn = _pointwise_ffn(dim)
        self.channel_ffns = nn.ModuleList(_pointwise_ffn(dim) for _ in range(2 if form == "paper" else 1))
        self.down_channel: nn.Linear | None = None
        if form == "code":
            # Created but never used by the released forward pass; kept only so that the parameter count (and a
            # strict state-dict load of a released-code checkpoint) matches the released code.
            self.down_channel = nn.Linear(2 * dim, 1, bias=False)
        self.reset_gates()

    def reset_gates(self) -> None:
        """Gate init of the released code: spatial weights 1/(2C); channel-gate weights 1.0, their biases default.

        With constant spatial weights the initial spatial gate is σ(mean of the concatenated channels). The paper
        form's extra spatial bias starts at zero so that its initial gate equals the code's.
        """
        nn.init.constant_(self.spatial_gate.weight, 1.0 / (2 * self.dim))
        if self.spatial_gate.bias is not None:
            nn.init.zeros_(self.spatial_gate.bias)
        for gate in self.channel_gates:
            nn.init.constant_(gate.weight, 1.0)

    def _check(self, x: torch.Tensor) -> None:
        g, c = self.grid_size, self.dim
        if x.dim() != 4 or tuple(x.shape[1:]) != (g, g, c) or x.shape[0] % 2 != 0 or x.shape[0] == 0:
            raise ModelError(
                f"BCSF expects [2B, {g}, {g}, {c}] tokens (before rows, then after rows), got {list(x.shape)}"
            )

    def _channel_gate(self, k: int, x_self: torch.Tensor, x_other: torch.Tensor) -> torch.Tensor:
        """Per-channel gate of date k from the spatially concatenated pair [x_self ; x_other] → [B, 1, 1, C]."""
        b, h, w, c = x_self.shape
        pair = torch.cat([x_self.reshape(b, h * w, c), x_other.reshape(b, h * w, c)], dim=1)  # [B, 2hw, C]
        gate = torch.sigmoid(self.channel_gates[k](pair.transpose(1, 2)))  # [B, C, 1]
        return gate.reshape(b, 1, 1, c)  # [B, 1, 1, C]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[2B, H, W, C] (before rows, then after rows) → F + F^sf + F^cf, [2B, H, W, C]."""
        self._check(x)
        b = x.shape[0] // 2
        x1, x2 = x[:b], x[b:]  # [B, H, W, C] each
        if self.form == "paper":
            swapped = torch.cat([x2, x1], dim=0)  # [2B, H, W, C]: row i holds the other date of row i
            s_gate = torch.sigmoid(self.spatial_gate(torch.cat([x, swapped], dim=-1)))  # [2B, H, W, 1]
            c_gates = [self._channel_gate(0, x1, x2), self._channel_gate(1, x2, x1)]  # [self ; other]
        else:
            s_gate = torch.sigmoid(self.spatial_gate(torch.cat([x1, x2], dim=-1)))  # [B, H, W, 1], from [F1 ; F2]
            s_gate = s_gate.repeat(2, 1, 1, 1)  # [2B, H, W, 1]: the same map gates both dates
            c_gates = [self._channel_gate(0, x1, x2), self._channel_gate(1, x1, x2)]  # both read [F1 ; F2]
        spatial = self.spatial_ffn(x * s_gate)  # [2B, H, W, C]
        channel = [
            self.channel_ffns[k % len(self.channel_ffns)](x_k * gate)  # [B, H, W, C]
            for k, (x_k, gate) in enumerate(zip((x1, x2), c_gates))
        ]
        return x + spatial + torch.cat(channel, dim=0)  # [2B, H, W, C]

    def extra_repr(self) -> str:
        return f"dim={self.dim}, grid_size={self.grid_size}, form={self.form!r}"
