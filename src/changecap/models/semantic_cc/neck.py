"""Multi-task semantic aggregation neck of Semantic-CC (``docs/semantic_cc.md``, eqs. (4)–(5)), code form.

Two token streams leave the encoder: the captioning (CC) stream, raw SAM tokens mapped to the Q-Former's visual width,
and the change-detection (CD) stream, SAM-neck tokens. Each neck unit refines both with their own self-attention and
then injects CD semantics into the CC stream through a bilinear similarity gate, so that the caption side "sees"
what the change detector considers changed:

  X_cd^i = Intra_cd(X_cd),   X_cc^i = Intra_cc(X_cc)
  X_cc  ← X_cc + Inter(X_cc^i, X_cd^i)
  X_cd  ← X_cd + X_cd^i                    (+ Inter'(X_cd^i, X_cc^i) with ``symmetric_inter``)

Both dates stay stacked on the batch axis ([2B, L, ·]); nothing in the neck mixes rows, so the dates and the pairs
are processed independently.

Module names, for selecting one side's parameters by prefix (training stages):

* CD side: ``units.{i}.intra_cd``.
* CC side: ``cc_proj``, ``units.{i}.intra_cc``, ``units.{i}.inter`` (the inter-task layer writes into the CC stream).
* ``units.{i}.inter_cd`` (only with ``symmetric_inter=True``) is the mirrored layer that writes into the CD stream; it
  reads both streams and belongs to neither side by this rule — select it explicitly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from changecap.errors import ModelError

#: default eps of the neck's LayerNorms. The released code's is 0 (``NeckConfig.ln_eps``), which divides by zero on
#: a constant token; :class:`TokenLayerNorm` guards that case.
LN_EPS = 1e-6


class TokenLayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` over the last axis that also accepts ``eps=0`` (the released neck's value).

    With eps 0 a token whose values are all equal (variance 0) is 0/0 = NaN, in the output and in every gradient;
    here its normalised values are 0 (the limit of any eps > 0), so its output is the bias. Every other token gets
    LayerNorm with eps 0: eps is passed as the smallest normal float32 (1.2e-38), which leaves any variance above
    about 1e-30 unchanged when added and keeps a zero variance finite. With eps > 0 this is ``nn.LayerNorm``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.eps > 0:
            return super().forward(x)
        out = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, torch.finfo(torch.float32).tiny)
        constant = x.amax(dim=-1, keepdim=True) == x.amin(dim=-1, keepdim=True)  # [..., 1]
        return torch.where(constant, self.bias.to(out.dtype), out)


def _check_tokens(name: str, x: torch.Tensor, dim: int) -> None:
    if x.dim() != 3 or x.shape[-1] != dim:
        raise ModelError(f"{name} expects tokens [N, L, {dim}], got {list(x.shape)}")


class IntraTaskAttention(nn.Module):
    """Self-attention over one stream's tokens: U = LN(W_o·MHSA(W_q X, W_k X, W_v X)); returns U + FFN(U).

    There is no residual from X around the attention (as in the released code); the unit adds X back outside.
    ``residual=True`` (not the paper's or the code's) makes it U = LN(X + W_o·MHSA(...)), which keeps the tokens'
    spatial differences when the attention is near-uniform. ``num_heads`` does not change the parameter count; the
    code-faithful value is ``dim`` (head width 1), and ``ln_eps=0`` gives the code's LayerNorm.
    """

    def __init__(self, dim: int, num_heads: int, residual: bool = False, ln_eps: float = LN_EPS) -> None:
        super().__init__()
        self.residual = residual
        if num_heads < 1 or dim % num_heads != 0:
            raise ModelError(f"intra-task attention width {dim} is not divisible by {num_heads} heads")
        self.dim = dim
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.norm = TokenLayerNorm(dim, eps=ln_eps)
        self.ffn = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        n, length, _ = x.shape
        return x.view(n, length, self.num_heads, self.dim // self.num_heads).transpose(1, 2)  # [N, h, L, d/h]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, L, D] → [N, L, D]."""
        _check_tokens("intra-task attention", x, self.dim)
        n, length, _ = x.shape
        q, k, v = self._heads(self.q_proj(x)), self._heads(self.k_proj(x)), self._heads(self.v_proj(x))
        attended = F.scaled_dot_product_attention(q, k, v)  # [N, h, L, d/h]
        attended = attended.transpose(1, 2).reshape(n, length, self.dim)  # [N, L, D]
        a = self.out_proj(attended)  # [N, L, D]
        u = self.norm(x + a if self.residual else a)  # [N, L, D]
        return u + self.ffn(u)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, residual={self.residual}"


def bilinear(layer: nn.Bilinear, x_a: torch.Tensor, x_b: torch.Tensor) -> torch.Tensor:
    """``layer(x_a, x_b)`` as two matrix products: S_k = x_aᵀ W_k x_b + b_k.

    ``nn.Bilinear`` goes through ``aten::_trilinear``, whose backward on CPU took 81 % of a whole training update of
    the SynthCC config (1.4 s of 1.75 s); (x_a · W) then a contraction with x_b gives the same numbers with GEMMs.
    """
    k, d_a, d_b = layer.weight.shape  # [K, D_a, D_b]
    lead = x_a.shape[:-1]
    w = layer.weight.permute(1, 0, 2).reshape(d_a, k * d_b)  # [D_a, K·D_b]
    t = (x_a.reshape(-1, d_a) @ w).view(-1, k, d_b)  # [N·L, K, D_b]
    s = torch.bmm(t, x_b.reshape(-1, d_b, 1)).squeeze(-1)  # [N·L, K]
    if layer.bias is not None:
        s = s + layer.bias
    return s.view(*lead, k)  # [N, L, K]


class InterTaskAttention(nn.Module):
    """Bilinear-similarity gate from stream b into stream a, per token position (eq. (5) plus the code's LayerNorm).

    S = X_aᵀ W X_b + b (``nn.Bilinear`` with dim_b outputs), ΔX_b = X_b ⊙ σ(S), X_a' = LN(σ(W_p [X_a ; ΔX_b] + b_p)).
    The similarity decides, per token, which of b's channels agree with a's content; only those pass into a.
    """

    def __init__(self, dim_a: int, dim_b: int, ln_eps: float = LN_EPS) -> None:
        super().__init__()
        self.dim_a = dim_a
        self.dim_b = dim_b
        self.similarity = nn.Bilinear(dim_a, dim_b, dim_b)  # weight [dim_b, dim_a, dim_b]
        self.proj = nn.Linear(dim_a + dim_b, dim_a)  # the paper's 1×1 conv over the concatenation
        self.norm = TokenLayerNorm(dim_a, eps=ln_eps)

    def forward(self, x_a: torch.Tensor, x_b: torch.Tensor) -> torch.Tensor:
        """X_a [N, L, dim_a], X_b [N, L, dim_b] → X_a' [N, L, dim_a]."""
        _check_tokens("inter-task attention (stream a)", x_a, self.dim_a)
        _check_tokens("inter-task attention (stream b)", x_b, self.dim_b)
        if x_a.shape[:2] != x_b.shape[:2]:
            raise ModelError(
                f"inter-task attention needs streams of equal [N, L], got {list(x_a.shape)} and {list(x_b.shape)}"
            )
        delta_b = x_b * torch.sigmoid(bilinear(self.similarity, x_a, x_b))  # [N, L, dim_b]
        return self.norm(torch.sigmoid(self.proj(torch.cat([x_a, delta_b], dim=-1))))  # [N, L, dim_a]

    def extra_repr(self) -> str:
        return f"dim_a={self.dim_a}, dim_b={self.dim_b}"


class NeckUnit(nn.Module):
    """One aggregation unit: per-stream self-attention, then CD → CC injection (and CC → CD if symmetric)."""

    def __init__(
        self,
        cc_dim: int,
        cd_dim: int,
        cc_heads: int,
        cd_heads: int,
        symmetric_inter: bool,
        intra_residual: bool = False,
        ln_eps: float = LN_EPS,
    ) -> None:
        super().__init__()
        self.intra_cc = IntraTaskAttention(cc_dim, cc_heads, intra_residual, ln_eps)
        self.intra_cd = IntraTaskAttention(cd_dim, cd_heads, intra_residual, ln_eps)
        self.inter = InterTaskAttention(cc_dim, cd_dim, ln_eps)
        # Mirrored layer (bilinear cd×cc → cc: ≈ 507 M parameters at the paper's widths, hence off by default).
        self.inter_cd = InterTaskAttention(cd_dim, cc_dim, ln_eps) if symmetric_inter else None

    def forward(self, x_cc: torch.Tensor, x_cd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """X_cc [N, L, cc_dim], X_cd [N, L, cd_dim] → updated (X_cc, X_cd), same shapes."""
        cd_intra = self.intra_cd(x_cd)  # [N, L, cd_dim]
        cc_intra = self.intra_cc(x_cc)  # [N, L, cc_dim]
        new_cc = x_cc + self.inter(cc_intra, cd_intra)
        new_cd = x_cd + cd_intra
        if self.inter_cd is not None:
            # our reading of eq. (4): the mirrored update is added on top of the code's X_cd + X_cd^intra (both read the
            # same pre-update intra features), so symmetric_inter=False is exactly the released code.
            new_cd = new_cd + self.inter_cd(cd_intra, cc_intra)
        return new_cc, new_cd


class SemanticAggregationNeck(nn.Module):
    """``cc_proj`` (encoder width → CC width) followed by ``units`` :class:`NeckUnit` s.

    Paper: 3 units; released code: 2. ``cc_heads`` / ``cd_heads`` default to a conventional 16 / 8; the released code
    uses one head per channel (``cc_heads=cc_dim``, ``cd_heads=cd_dim``). ``ln_eps`` is the eps of every LayerNorm
    of the units (released code: 0).
    """

    def __init__(
        self,
        units: int = 3,
        encoder_dim: int = 1024,
        cc_dim: int = 1408,
        cd_dim: int = 256,
        cc_heads: int = 16,
        cd_heads: int = 8,
        symmetric_inter: bool = False,
        intra_residual: bool = False,
        ln_eps: float = LN_EPS,
    ) -> None:
        super().__init__()
        if units < 1:
            raise ModelError(f"the aggregation neck needs at least one unit, got {units}")
        if not ln_eps >= 0:
            raise ModelError(f"the aggregation neck's LayerNorm eps must be >= 0, got {ln_eps}")
        self.encoder_dim = encoder_dim
        self.cc_dim = cc_dim
        self.cd_dim = cd_dim
        self.cc_proj = nn.Linear(encoder_dim, cc_dim)
        self.units = nn.ModuleList(
            NeckUnit(cc_dim, cd_dim, cc_heads, cd_heads, symmetric_inter, intra_residual, ln_eps) for _ in range(units)
        )

    def forward(self, raw_tokens: torch.Tensor, cd_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw tokens [2B, L, encoder_dim], CD tokens [2B, L, cd_dim] → F_cc [2B, L, cc_dim], F_cd [2B, L, cd_dim].

        F_cd stays in token layout; the CD decoder wants it as a map ([2B, cd_dim, g, g], row-major tokens).
        """
        _check_tokens("the aggregation neck (raw encoder tokens)", raw_tokens, self.encoder_dim)
        _check_tokens("the aggregation neck (CD tokens)", cd_tokens, self.cd_dim)
        if raw_tokens.shape[:2] != cd_tokens.shape[:2]:
            raise ModelError(
                f"the aggregation neck needs streams of equal [2B, L], got {list(raw_tokens.shape)} "
                f"and {list(cd_tokens.shape)}"
            )
        x_cc = self.cc_proj(raw_tokens)  # [2B, L, cc_dim]
        x_cd = cd_tokens
        for unit in self.units:
            x_cc, x_cd = unit(x_cc, x_cd)
        return x_cc, x_cd
