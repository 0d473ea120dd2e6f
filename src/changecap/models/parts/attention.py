"""Multi-head attention with ``nn.MultiheadAttention``'s parameter layout, built on ``scaled_dot_product_attention``.

Why not ``nn.MultiheadAttention`` itself: incremental decoding needs the projections and the attention product as
separate steps (project only the newest token, reuse cached keys/values), which the stock module does not expose.
The parameters keep the stock names and shapes (``in_proj_weight`` [3D, D] with rows q; k; v, ``in_proj_bias`` [3D],
``out_proj.weight`` [D, D], ``out_proj.bias`` [D]) so that official checkpoints map onto this module one to one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from changecap.errors import ModelError


class MultiheadAttention(nn.Module):
    """Batch-first multi-head attention split into projection and attention steps (no bias_kv, no zero_attn)."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads != 0:
            raise ModelError(f"attention width {dim} is not divisible by the number of heads {heads}")
        self.dim = dim
        self.heads = heads
        self.head_dim = dim // heads
        self.dropout = dropout  # on the attention weights, as in nn.MultiheadAttention
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise exactly like ``nn.MultiheadAttention`` (Xavier in-projection, zero biases)."""
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.in_proj_bias)
        nn.init.zeros_(self.out_proj.bias)

    # ------------------------------------------------------------------ projections
    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        # -1 for the batch keeps a traced (ONNX) graph's batch dynamic; an empty batch is explicit (-1 is ambiguous)
        n, t, _ = x.shape
        return x.view(n if n == 0 else -1, t, self.heads, self.head_dim).transpose(1, 2)  # [N, H, T, Dh]

    def project_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Self-attention projections of ``x`` [N, T, D] in one matmul → three [N, H, T, Dh]."""
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)  # 3 × [N, T, D]
        return self._split_heads(q), self._split_heads(k), self._split_heads(v)

    def project_q(self, x: torch.Tensor) -> torch.Tensor:
        """Query projection of ``x`` [N, T, D] → [N, H, T, Dh]."""
        d = self.dim
        return self._split_heads(F.linear(x, self.in_proj_weight[:d], self.in_proj_bias[:d]))

    def project_kv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Key and value projections of ``x`` [N, S, D] → two [N, H, S, Dh] (e.g. the decoder memory, once)."""
        d = self.dim
        k, v = F.linear(x, self.in_proj_weight[d:], self.in_proj_bias[d:]).chunk(2, dim=-1)  # 2 × [N, S, D]
        return self._split_heads(k), self._split_heads(v)

    def project_k_v(self, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Key projection of ``key`` and value projection of ``value`` (different tensors), [N, S, D] each →
        two [N, H, S, Dh] (``nn.MultiheadAttention(q, k, v)`` with k ≠ v)."""
        d = self.dim
        k = F.linear(key, self.in_proj_weight[d : 2 * d], self.in_proj_bias[d : 2 * d])
        v = F.linear(value, self.in_proj_weight[2 * d :], self.in_proj_bias[2 * d :])
        return self._split_heads(k), self._split_heads(v)

    # ------------------------------------------------------------------ attention
    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Attention of projected heads → output [N, Tq, D].

        ``q`` [N, H, Tq, Dh], ``k``/``v`` [N, H, S, Dh]; ``mask`` boolean, broadcastable to [N, H, Tq, S],
        ``True`` where a query may attend to a key.
        """
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)  # [N, H, Tq, Dh]
        n, _, tq, _ = out.shape
        out = out.transpose(1, 2).reshape(n if n == 0 else -1, tq, self.dim)  # [N, Tq, D]
        return self.out_proj(out)

    def forward(self, query: torch.Tensor, key_value: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Full (uncached) attention: ``query`` [N, T, D] over ``key_value`` [N, S, D] → [N, T, D]."""
        if query is key_value:
            q, k, v = self.project_qkv(query)
        else:
            q = self.project_q(query)
            k, v = self.project_kv(key_value)
        return self.attend(q, k, v, mask)


class EncoderLayer(nn.Module):
    """``nn.TransformerEncoderLayer(dim, heads, ffn_dim, dropout, activation, batch_first=True)`` (post-norm) on
    changecap's attention: the same parameter names, creation order and initialisation, fused SDPA, and a batch
    that stays dynamic when the layer is traced for ONNX export (the torch layer's own attention fixes it)."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float = 0.1, activation: str = "gelu") -> None:
        super().__init__()
        if activation not in ("gelu", "relu"):
            raise ModelError(f"encoder layer activation must be gelu or relu, got {activation!r}")
        self.activation = F.gelu if activation == "gelu" else F.relu
        self.self_attn = MultiheadAttention(dim, heads, dropout)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, D] → [B, T, D]."""
        x = self.norm1(x + self.dropout1(self.self_attn(x, x)))
        return self.norm2(x + self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x))))))
