"""Joint feature modelling (``docs/dfm.md``, eqs. 8 and 10; the operators are changecap's reconstruction).

    F_dd  = E_2 − E_1                                    direct difference of the raw ViT tokens (or |E_2 − E_1|)
    F̂_dd = CA_dd(F_dd, P),  F̂_st = CA_st(F_st, P)        the prior injected by cross-attention (post-norm + FFN)
    [F̄_dd ; F̄_st] = BSA([F̂_dd ; F̂_st])                 bidirectional self-attention across both streams
    F_j   = ω_1 F̄_dd + ω_2 F̄_st,  (ω_1, ω_2) = softmax(a), a ∈ R² learnable, init 0

``bsa="joint"``: one non-causal Transformer encoder layer over both streams concatenated along the tokens ([B, 2N, D],
a stream-type embedding added), split back; ``"cross"``: dd attends to st and st to dd. ``weights="free"``: ω are
unconstrained scalars (init ½). Without a prior (``prior.enabled: false``) the cross-attentions are skipped.
"""

from __future__ import annotations

import torch
from torch import nn

from changecap.models.dfm.config import JFMConfig
from changecap.models.parts.attention import EncoderLayer, MultiheadAttention


class CrossAttentionBlock(nn.Module):
    """Queries [B, N, D] attend to a context [B, M, D]: post-norm residual, then a post-norm FFN."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        # changecap's attention (same parameters as nn.MultiheadAttention: in_proj_*, out_proj): fused SDPA, and a
        # batch that stays dynamic when traced for ONNX export
        self.attn = MultiheadAttention(dim, heads, dropout)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn_dim, dim))
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.dropout(self.attn(x, context)))  # [B, N, D]
        return self.norm2(x + self.dropout(self.ffn(x)))


class JointFeatureModelling(nn.Module):
    """(E_1, E_2, F_st [B, N, D], P [B, N_p, D] or None) → F_j [B, N, D]."""

    def __init__(self, dim: int, config: JFMConfig, with_prior: bool) -> None:
        super().__init__()
        self.config = config
        ffn = config.ffn_mult * dim
        self.prior_dd = CrossAttentionBlock(dim, config.heads, ffn, config.dropout) if with_prior else None
        self.prior_st = CrossAttentionBlock(dim, config.heads, ffn, config.dropout) if with_prior else None
        if config.bsa == "joint":
            self.stream_type = nn.Parameter(torch.zeros(2, dim))  # [2, D]: which stream a token belongs to
            nn.init.trunc_normal_(self.stream_type, std=0.02)
            self.bsa = EncoderLayer(dim, config.heads, ffn, config.dropout)  # nn.TransformerEncoderLayer's function
        else:
            self.dd_to_st = CrossAttentionBlock(dim, config.heads, ffn, config.dropout)
            self.st_to_dd = CrossAttentionBlock(dim, config.heads, ffn, config.dropout)
        init = torch.zeros(2) if config.weights == "softmax" else torch.full((2,), 0.5)
        self.fusion_logits = nn.Parameter(init)  # a (softmax) or ω (free)

    def fusion_weights(self) -> torch.Tensor:
        """(ω_dd, ω_st) [2]."""
        a = self.fusion_logits
        return a.softmax(dim=0) if self.config.weights == "softmax" else a

    def forward(
        self, e1: torch.Tensor, e2: torch.Tensor, f_st: torch.Tensor, prior: torch.Tensor | None
    ) -> torch.Tensor:
        f_dd = e2 - e1 if self.config.difference == "after_minus_before" else (e2 - e1).abs()  # [B, N, D] eq. 8
        if prior is not None and self.prior_dd is not None and self.prior_st is not None:
            f_dd, f_st = self.prior_dd(f_dd, prior), self.prior_st(f_st, prior)  # [B, N, D] each
        n = f_dd.shape[1]
        if self.config.bsa == "joint":
            both = torch.cat([f_dd + self.stream_type[0], f_st + self.stream_type[1]], dim=1)  # [B, 2N, D]
            both = self.bsa(both)  # every token attends to both streams, in both directions
            f_dd, f_st = both[:, :n], both[:, n:]  # [B, N, D] each
        else:
            f_dd, f_st = self.dd_to_st(f_dd, f_st), self.st_to_dd(f_st, f_dd)
        w = self.fusion_weights()
        return w[0] * f_dd + w[1] * f_st  # [B, N, D]
