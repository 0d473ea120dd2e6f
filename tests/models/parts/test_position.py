"""Learned 2-D position embedding (docs/hisem.md)."""

from __future__ import annotations

import math

import pytest
import torch

from changecap.models.parts.position import PositionEmbedding2D


def test_table_is_column_half_then_row_half_in_row_major_order() -> None:
    torch.manual_seed(0)
    grid, dim = 3, 8
    pos = PositionEmbedding2D(grid, dim)
    table = pos()
    assert table.shape == (grid * grid, dim)
    col, row = pos.col_embedding.weight, pos.row_embedding.weight
    for i in range(grid):
        for j in range(grid):
            expected = torch.cat([col[j], row[i]])  # official: h_embedding[j] (column) first, w_embedding[i] second
            torch.testing.assert_close(table[i * grid + j], expected, rtol=0, atol=0)


def test_xavier_uniform_init_bounds() -> None:
    torch.manual_seed(0)
    grid, dim = 14, 768
    pos = PositionEmbedding2D(grid, dim)
    bound = math.sqrt(6.0 / (grid + dim // 2))  # Xavier-uniform on a [grid, dim/2] matrix
    for w in (pos.col_embedding.weight.detach(), pos.row_embedding.weight.detach()):
        assert w.shape == (grid, dim // 2)
        assert float(w.abs().max()) <= bound
        assert float(w.abs().max()) > 0.9 * bound  # uniform over the whole range, not nn.Embedding's N(0, 1)
    assert sum(p.numel() for p in pos.parameters()) == 10_752


def test_gradient_reaches_both_tables() -> None:
    pos = PositionEmbedding2D(2, 4)
    pos().square().sum().backward()
    assert pos.col_embedding.weight.grad is not None and pos.col_embedding.weight.grad.abs().sum() > 0
    assert pos.row_embedding.weight.grad is not None and pos.row_embedding.weight.grad.abs().sum() > 0


def test_odd_width_rejected() -> None:
    with pytest.raises(ValueError, match="even"):
        PositionEmbedding2D(4, 7)
