"""BDAM — Bidirectional Differential Attention Modulation (``docs/hisem.md``).

BDAM makes the two dates' token features change-aware before they are fused. Each layer

1. conditions both dates on a gated discrepancy map C = σ(MLP[F1; F2]) ⊙ |F1 − F2| (:class:`FeatureModulator`),
2. turns C into per-token "something appeared" / "something disappeared" scores that bias only the diagonal of the
   cross-date attention (a token's attention to *its own location* in the other date), and
3. runs differential cross attention in both directions (:class:`BidirectionalDiffAttention`): subtracting λ times
   the opposite direction's attention map cancels what both directions agree on (unchanged context) and keeps what is
   specific to additions (before → after) or deletions (after → before).

Official module names (for the checkpoint converter): :class:`BDAM` is ``TripleDifferentialEnhancer``
(``encoder_trans.diff_attn``), :class:`FeatureModulator` is ``FeatModulator`` and :class:`BidirectionalDiffAttention`
is ``BidirectionalDiffModule``. The official code keeps the per-layer scorers and output norms in lists on the
enhancer; here they live in :class:`BDAMLayer`, which groups everything one layer owns.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def tokens_to_grid(x: torch.Tensor, grid_size: int) -> torch.Tensor:
    """Row-major tokens [N, L, D] → feature map [N, D, grid, grid] (token t = row·grid + col)."""
    _, length, d = x.shape
    if length != grid_size * grid_size:
        raise ValueError(f"expected {grid_size}×{grid_size} = {grid_size * grid_size} tokens, got {length}")
    return x.transpose(1, 2).reshape(-1, d, grid_size, grid_size)  # [N, D, g, g] (-1: traced graphs keep N dynamic)


def grid_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """Feature map [N, D, H, W] → row-major tokens [N, H·W, D]."""
    return x.flatten(2).transpose(1, 2)  # [N, L, D]


def diagonal_bias_attention(
    q: torch.Tensor, k: torch.Tensor, values: tuple[torch.Tensor, ...], diag_bias: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """softmax(q kᵀ / √d_head + diag(diag_bias)) · v for each v in ``values``, the bias broadcast over heads.

    q, k: [B, H, L, d_head]; each v: [B, H, L, d_head]; diag_bias: [B, L] (query i ↔ key i). Returns one
    [B, H, L, d_head] output per value set.

    Why an additive mask for ``scaled_dot_product_attention`` instead of materialising the softmax: the fused kernels
    (memory-efficient attention on GPU, flash attention on CPU) support an additive float mask and its gradient, so
    the [B, H, L, L] probabilities are never stored. The mask is zero everywhere except on its diagonal, which is
    exactly "add the bias to the diagonal of the score matrix".

    Why one call per value set rather than one call on the value sets concatenated along the feature axis: the CPU
    flash kernel needs value width = query width and otherwise falls back to the unfused math path (materialised
    scores, several elementwise passes). Measured on the paper BDAM shapes (B 8, H 8, L 196, d_head 96, 1 thread):
    two fused calls 31 ms against 45 ms for one call on [V_a | V_b], although the fused calls compute q kᵀ twice.
    """
    # diag(diag_bias) as bias ⊙ I (the same values for a finite bias; diag_embed has no ONNX export)
    eye = torch.eye(diag_bias.shape[-1], dtype=diag_bias.dtype, device=diag_bias.device)  # [L, L]
    mask = (diag_bias[:, :, None] * eye)[:, None].to(q.dtype)  # [B, 1, L, L], broadcast over heads
    scale = 1.0 / math.sqrt(q.shape[-1])
    return tuple(F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale) for v in values)


class FeatureModulator(nn.Module):
    """Discrepancy-aware feature conditioning (the paper's "DFC layer"; official ``FeatModulator``).

    C  = σ(W2 · ReLU(W1 · [F1; F2])) ⊙ |F1 − F2|       per-token gated change map
    Ek = LN_loc(Fk + DWConv3×3(Fk)) + C                 k ∈ {1, 2}; the conv and the LayerNorm are shared by both dates

    The depth-wise 3×3 convolution injects local spatial context (a change is a region, not a token); sharing it and
    the norm between dates keeps both dates in the same feature space, so |E1 − E2| stays meaningful downstream.
    """

    def __init__(self, dim: int, grid_size: int, reduction: int = 4) -> None:
        super().__init__()
        self.grid_size = grid_size
        hidden = dim // reduction  # official: ``dim // reduction`` (192 for 768 / 4)
        # indices 0 and 2 are the official ``gate_net.0`` / ``gate_net.2``
        self.gate_net = nn.Sequential(nn.Linear(2 * dim, hidden), nn.ReLU(), nn.Linear(hidden, dim), nn.Sigmoid())
        self.local_conv = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim, bias=False)
        self.local_norm = nn.LayerNorm(dim)

    def forward(self, f1: torch.Tensor, f2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(F1, F2) [B, L, D] each → (E1, E2, C), all [B, L, D]."""
        change = self.gate_net(torch.cat([f1, f2], dim=-1)) * (f1 - f2).abs()  # [B, L, D]
        both = torch.cat([f1, f2], dim=0)  # [2B, L, D]: one conv / norm call for the shared weights
        local = grid_to_tokens(self.local_conv(tokens_to_grid(both, self.grid_size)))  # [2B, L, D]
        e1, e2 = self.local_norm(both + local).chunk(2, dim=0)  # 2 × [B, L, D]
        return e1 + change, e2 + change, change


class BidirectionalDiffAttention(nn.Module):
    """Bidirectional differential cross attention with gated fusion (paper "BDCI layer"; official
    ``BidirectionalDiffModule``).

    A_b→a = softmax(Q_b K_aᵀ/√d + B_add)   (before queries, after keys)
    A_a→b = softmax(Q_a K_bᵀ/√d + B_del)   (after queries, before keys)
    O_add = (A_b→a − λ A_a→b) V_a  → refines the after stream
    O_del = (A_a→b − λ A_b→a) V_b  → refines the before stream
    P_b = W_pb(g_b ⊙ O_del + (1 − g_b) ⊙ E1),  g_b = σ(W_fb [E1; O_del])   (and symmetrically P_a)

    λ is a constant (official ``init_lambda`` is stored as a plain float, so it is not trained); it is kept as a
    Python float attribute, not a parameter or buffer.
    """

    def __init__(self, dim: int, heads: int, diff_lambda: float = 0.9, official_unused_params: bool = False) -> None:
        super().__init__()
        if dim % heads != 0:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.dim = dim
        self.heads = heads
        self.head_dim = dim // heads
        self.diff_lambda = float(diff_lambda)
        self.q_b = nn.Linear(dim, dim, bias=False)
        self.k_b = nn.Linear(dim, dim, bias=False)
        self.v_b = nn.Linear(dim, dim, bias=False)
        self.q_a = nn.Linear(dim, dim, bias=False)
        self.k_a = nn.Linear(dim, dim, bias=False)
        self.v_a = nn.Linear(dim, dim, bias=False)
        self.fuse_gate_b = nn.Linear(2 * dim, dim)
        self.fuse_gate_a = nn.Linear(2 * dim, dim)
        self.proj_b = nn.Linear(dim, dim)
        self.proj_a = nn.Linear(dim, dim)
        self.norm_add: nn.LayerNorm | None = None
        self.norm_del: nn.LayerNorm | None = None
        if official_unused_params:
            # Created but never read by the official forward pass; kept only so that parameter counts and strict
            # state-dict loading match the official checkpoints.
            self.norm_add = nn.LayerNorm(dim)
            self.norm_del = nn.LayerNorm(dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        _, length, _ = x.shape  # the batch stays -1 below: a traced (ONNX) graph keeps it dynamic
        return x.view(-1, length, self.heads, self.head_dim).transpose(1, 2)  # [B, H, L, d_head]

    def _merge(self, x: torch.Tensor) -> torch.Tensor:
        _, _, length, _ = x.shape
        return x.transpose(1, 2).reshape(-1, length, self.dim)  # [B, L, D]

    def forward(
        self, e1: torch.Tensor, e2: torch.Tensor, bias_add: torch.Tensor, bias_del: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(E1, E2) [B, L, D], diagonal biases [B, L] → (P_b, P_a) [B, L, D] (before / after streams)."""
        q_b, k_b, v_b = self._heads(self.q_b(e1)), self._heads(self.k_b(e1)), self._heads(self.v_b(e1))
        q_a, k_a, v_a = self._heads(self.q_a(e2)), self._heads(self.k_a(e2)), self._heads(self.v_a(e2))
        # A·V is linear in A, so (A_b→a − λ A_a→b)·V = A_b→a·V − λ A_a→b·V. Each attention map is applied to both
        # value sets (one fused call per set, sharing the diagonal mask): four attention products in total.
        x_ba_va, x_ba_vb = diagonal_bias_attention(q_b, k_a, (v_a, v_b), bias_add)  # A_b→a V_a, A_b→a V_b
        x_ab_va, x_ab_vb = diagonal_bias_attention(q_a, k_b, (v_a, v_b), bias_del)  # A_a→b V_a, A_a→b V_b
        o_add = self._merge(x_ba_va - self.diff_lambda * x_ab_va)  # [B, L, D]
        o_del = self._merge(x_ab_vb - self.diff_lambda * x_ba_vb)  # [B, L, D]
        g_b = torch.sigmoid(self.fuse_gate_b(torch.cat([e1, o_del], dim=-1)))  # [B, L, D]
        g_a = torch.sigmoid(self.fuse_gate_a(torch.cat([e2, o_add], dim=-1)))
        p_b = self.proj_b(g_b * o_del + (1 - g_b) * e1)
        p_a = self.proj_a(g_a * o_add + (1 - g_a) * e2)
        return p_b, p_a

    def extra_repr(self) -> str:
        return f"dim={self.dim}, heads={self.heads}, diff_lambda={self.diff_lambda} (constant)"


class BDAMLayer(nn.Module):
    """One BDAM layer: modulator → add/del diagonal biases → bidirectional attention → per-stream LayerNorm.

    There is deliberately no residual connection around the layer (the official code has none); the modulator's
    ``F + DWConv(F)`` and the gated fusion with E carry the identity path.
    """

    def __init__(
        self,
        dim: int,
        grid_size: int,
        heads: int,
        modulator_reduction: int = 4,
        diff_lambda: float = 0.9,
        official_unused_params: bool = False,
    ) -> None:
        super().__init__()
        self.modulator = FeatureModulator(dim, grid_size, modulator_reduction)
        self.add_scorer = nn.Linear(dim, 1)  # official diff_attn.add_predictor_list.{l}
        self.del_scorer = nn.Linear(dim, 1)  # official diff_attn.del_predictor_list.{l}
        self.attention = BidirectionalDiffAttention(dim, heads, diff_lambda, official_unused_params)
        self.norm_before = nn.LayerNorm(dim)  # official diff_attn.norm_b_list.{l}
        self.norm_after = nn.LayerNorm(dim)  # official diff_attn.norm_a_list.{l}

    def forward(
        self, f1: torch.Tensor, f2: torch.Tensor, add_scale: torch.Tensor, del_scale: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(F1, F2) [B, L, D] and the shared scalars κ_add, κ_del → (F1', F2') [B, L, D]."""
        e1, e2, change = self.modulator(f1, f2)
        bias_add = add_scale * self.add_scorer(change).squeeze(-1)  # [B, L]
        bias_del = del_scale * self.del_scorer(change).squeeze(-1)  # [B, L]
        p_b, p_a = self.attention(e1, e2, bias_add, bias_del)
        return self.norm_before(p_b), self.norm_after(p_a)


class BDAM(nn.Module):
    """A stack of :class:`BDAMLayer` with two learnable scalars κ_add, κ_del shared by all layers.

    κ scales how strongly a token's add/del score pulls its attention onto the same location in the other date; one
    pair for the whole stack (official ``add_scale`` / ``del_scale``, initialised 1.0 / 0.5).
    """

    def __init__(
        self,
        dim: int,
        grid_size: int,
        layers: int = 3,
        heads: int = 8,
        modulator_reduction: int = 4,
        diff_lambda: float = 0.9,
        add_scale_init: float = 1.0,
        del_scale_init: float = 0.5,
        official_unused_params: bool = False,
    ) -> None:
        super().__init__()
        self.add_scale = nn.Parameter(torch.tensor(float(add_scale_init)))  # 0-dim, official diff_attn.add_scale
        self.del_scale = nn.Parameter(torch.tensor(float(del_scale_init)))  # 0-dim, official diff_attn.del_scale
        self.layers = nn.ModuleList(
            BDAMLayer(dim, grid_size, heads, modulator_reduction, diff_lambda, official_unused_params)
            for _ in range(layers)
        )

    def forward(self, f1: torch.Tensor, f2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(F1, F2) [B, L, D] → (F̃1, F̃2) [B, L, D]."""
        for layer in self.layers:
            f1, f2 = layer(f1, f2, self.add_scale, self.del_scale)
        return f1, f2
