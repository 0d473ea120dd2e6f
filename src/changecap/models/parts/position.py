"""Learned 2-D position embedding of HiSem's fusion (``docs/hisem.md``).

CLIP's own absolute position embedding is lost in the patch tokens' deep features as far as the fusion is concerned,
and BDAM's depth-wise convolutions plus the per-token attention biases need to know where a token lies, so HiSem adds
a learned, factorised 2-D position code to both dates: one table indexed by the column, one by the row, each giving
half of the channels. Sharing one code between the two dates keeps corresponding locations aligned, which is what the
bidirectional (before ↔ after) attention compares.
"""

from __future__ import annotations

import torch
from torch import nn


class PositionEmbedding2D(nn.Module):
    """pos(i, j) = concat(col_embedding[j], row_embedding[i]) for the token at row ``i``, column ``j``.

    Official names: ``col_embedding`` is ``h_embedding`` and ``row_embedding`` is ``w_embedding`` (the official code
    names them the other way round: its ``h_embedding`` is indexed by the column and fills the first half).
    """

    def __init__(self, grid_size: int, dim: int) -> None:
        super().__init__()
        if dim % 2 != 0:
            raise ValueError(f"PositionEmbedding2D needs an even width, got {dim}")
        self.grid_size = grid_size
        self.dim = dim
        self.col_embedding = nn.Embedding(grid_size, dim // 2)  # first half of the channels, indexed by column j
        self.row_embedding = nn.Embedding(grid_size, dim // 2)  # second half, indexed by row i
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform, as the official ``_reset_parameters`` does for exactly these two tables."""
        nn.init.xavier_uniform_(self.col_embedding.weight)
        nn.init.xavier_uniform_(self.row_embedding.weight)

    def forward(self) -> torch.Tensor:
        """The table for all L = grid_size² tokens in row-major order (token t = i·grid + j): [L, D]."""
        g, half = self.grid_size, self.dim // 2
        cols = self.col_embedding.weight[None, :, :].expand(g, g, half)  # [rows, cols, D/2]: [i, j] = col[j]
        rows = self.row_embedding.weight[:, None, :].expand(g, g, half)  # [rows, cols, D/2]: [i, j] = row[i]
        return torch.cat([cols, rows], dim=-1).reshape(g * g, self.dim)  # [L, D]

    def extra_repr(self) -> str:
        return f"grid_size={self.grid_size}, dim={self.dim}"
