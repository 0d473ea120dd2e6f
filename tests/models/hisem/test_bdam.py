"""BDAM: modulator, diagonal-bias attention, bidirectional differential attention, layers (docs/hisem.md)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from changecap.models.hisem.bdam import (
    BDAM,
    BDAMLayer,
    BidirectionalDiffAttention,
    FeatureModulator,
    diagonal_bias_attention,
    grid_to_tokens,
    tokens_to_grid,
)

DIM, GRID, HEADS = 32, 4, 4
L = GRID * GRID


def _count(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _pair(b: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, L, DIM, generator=g), torch.randn(b, L, DIM, generator=g)


# ------------------------------------------------------------------------------------------------ helpers
def test_grid_round_trip_is_row_major() -> None:
    x = torch.arange(2 * L * 3, dtype=torch.float32).view(2, L, 3)
    grid = tokens_to_grid(x, GRID)
    assert grid.shape == (2, 3, GRID, GRID)
    r, c = 1, 2
    torch.testing.assert_close(grid[:, :, r, c], x[:, r * GRID + c])  # token t = row·grid + col
    torch.testing.assert_close(grid_to_tokens(grid), x)
    with pytest.raises(ValueError, match="tokens"):
        tokens_to_grid(x[:, :-1], GRID)


# ------------------------------------------------------------------------------------------------ attention
def _dense_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # [B, H, L, L]
    full = torch.zeros(scores.shape[0], 1, L, L)
    for b in range(scores.shape[0]):
        for i in range(L):
            full[b, 0, i, i] = bias[b, i]  # diagonal only, broadcast over heads
    return torch.softmax(scores + full, dim=-1) @ v


def test_diagonal_bias_attention_equals_dense_reference_with_gradient() -> None:
    torch.manual_seed(0)
    q, k = torch.randn(2, HEADS, L, 8), torch.randn(2, HEADS, L, 8)
    values = (torch.randn(2, HEADS, L, 8), torch.randn(2, HEADS, L, 8))  # one map applied to both dates' values
    bias = (3 * torch.randn(2, L)).requires_grad_()
    outs = diagonal_bias_attention(q, k, values, bias)
    assert len(outs) == 2
    refs = [_dense_reference(q, k, v, bias) for v in values]
    for out, ref in zip(outs, refs, strict=True):
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    (g_out,) = torch.autograd.grad(sum(out.square().sum() for out in outs), bias)
    (g_ref,) = torch.autograd.grad(sum(ref.square().sum() for ref in refs), bias)
    torch.testing.assert_close(g_out, g_ref, rtol=1e-4, atol=1e-6)


def test_bdam_attention_takes_the_fused_cpu_kernel() -> None:
    """Value width = query width keeps SDPA on the fused flash kernel (a wider value falls back to the math path)."""
    torch.manual_seed(0)
    m = BidirectionalDiffAttention(DIM, HEADS).eval()
    e1, e2, bias = torch.randn(2, L, DIM), torch.randn(2, L, DIM), torch.randn(2, L)
    with torch.no_grad(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        m(e1, e2, bias, bias)
    names = {event.key for event in prof.key_averages()}
    assert "aten::_scaled_dot_product_flash_attention_for_cpu" in names
    assert "aten::_scaled_dot_product_attention_math" not in names


def _bidiff_reference(
    m: BidirectionalDiffAttention,
    e1: torch.Tensor,
    e2: torch.Tensor,
    bias_add: torch.Tensor,
    bias_del: torch.Tensor,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The literal formula: materialised A_add / A_del."""

    def heads(x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], L, HEADS, DIM // HEADS).transpose(1, 2)

    q_b, k_b, v_b = heads(m.q_b(e1)), heads(m.k_b(e1)), heads(m.v_b(e1))
    q_a, k_a, v_a = heads(m.q_a(e2)), heads(m.k_a(e2)), heads(m.v_a(e2))
    scale = 1 / math.sqrt(DIM // HEADS)
    a_ba = torch.softmax(q_b @ k_a.transpose(-1, -2) * scale + torch.diag_embed(bias_add)[:, None], -1)
    a_ab = torch.softmax(q_a @ k_b.transpose(-1, -2) * scale + torch.diag_embed(bias_del)[:, None], -1)
    o_add = ((a_ba - lam * a_ab) @ v_a).transpose(1, 2).reshape(-1, L, DIM)
    o_del = ((a_ab - lam * a_ba) @ v_b).transpose(1, 2).reshape(-1, L, DIM)
    g_b = torch.sigmoid(m.fuse_gate_b(torch.cat([e1, o_del], -1)))
    g_a = torch.sigmoid(m.fuse_gate_a(torch.cat([e2, o_add], -1)))
    return m.proj_b(g_b * o_del + (1 - g_b) * e1), m.proj_a(g_a * o_add + (1 - g_a) * e2)


def test_bidirectional_attention_equals_literal_formula() -> None:
    torch.manual_seed(0)
    m = BidirectionalDiffAttention(DIM, HEADS, diff_lambda=0.9)
    e1, e2 = _pair()
    bias_add, bias_del = torch.randn(2, L), torch.randn(2, L)
    p_b, p_a = m(e1, e2, bias_add, bias_del)
    r_b, r_a = _bidiff_reference(m, e1, e2, bias_add, bias_del, 0.9)
    assert p_b.shape == p_a.shape == (2, L, DIM)
    torch.testing.assert_close(p_b, r_b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(p_a, r_a, rtol=1e-5, atol=1e-5)


def test_lambda_is_a_constant_not_a_parameter() -> None:
    m = BidirectionalDiffAttention(DIM, HEADS, diff_lambda=0.9)
    assert isinstance(m.diff_lambda, float) and m.diff_lambda == 0.9
    names = [n for n, _ in m.named_parameters()] + [n for n, _ in m.named_buffers()]
    assert not any("lambda" in n for n in names)
    assert _count(m) == 6 * DIM * DIM + 2 * (2 * DIM * DIM + DIM) + 2 * (DIM * DIM + DIM)


def test_unused_official_norms_only_on_request() -> None:
    plain = BidirectionalDiffAttention(DIM, HEADS)
    official = BidirectionalDiffAttention(DIM, HEADS, official_unused_params=True)
    assert plain.norm_add is None and plain.norm_del is None
    assert _count(official) - _count(plain) == 4 * DIM
    e1, e2 = _pair()
    official.load_state_dict(plain.state_dict(), strict=False)
    bias = torch.zeros(2, L)
    torch.testing.assert_close(official(e1, e2, bias, bias), plain(e1, e2, bias, bias))  # never read


# ------------------------------------------------------------------------------------------------ modulator
def test_feature_modulator_formula_with_shared_conv_and_norm() -> None:
    torch.manual_seed(0)
    m = FeatureModulator(DIM, GRID, reduction=4)
    assert m.gate_net[0].out_features == DIM // 4
    assert m.local_conv.bias is None and m.local_conv.groups == DIM
    f1, f2 = _pair()
    e1, e2, change = m(f1, f2)
    gate = m.gate_net(torch.cat([f1, f2], -1))
    torch.testing.assert_close(change, gate * (f1 - f2).abs())

    def local(x: torch.Tensor) -> torch.Tensor:
        conv = F.conv2d(tokens_to_grid(x, GRID), m.local_conv.weight, padding=1, groups=DIM)
        return m.local_norm(x + grid_to_tokens(conv))

    torch.testing.assert_close(e1, local(f1) + change, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(e2, local(f2) + change, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------ stack
def test_bdam_shapes_scales_and_determinism() -> None:
    torch.manual_seed(0)
    bdam = BDAM(DIM, GRID, layers=2, heads=HEADS)
    assert bdam.add_scale.shape == () and bdam.add_scale.item() == 1.0
    assert bdam.del_scale.shape == () and bdam.del_scale.item() == 0.5
    scale_params = [n for n, _ in bdam.named_parameters() if "scale" in n]
    assert scale_params == ["add_scale", "del_scale"]  # two scalars shared by all layers
    f1, f2 = _pair()
    out1, out2 = bdam(f1, f2)
    assert out1.shape == out2.shape == (2, L, DIM)
    bdam.eval()
    e1, e2 = bdam(f1, f2)
    torch.testing.assert_close(out1, e1)  # no dropout anywhere: train == eval
    torch.testing.assert_close(out2, e2)


def test_bdam_gradients_reach_scales_and_inputs() -> None:
    torch.manual_seed(0)
    bdam = BDAM(DIM, GRID, layers=2, heads=HEADS)
    f1, f2 = (t.requires_grad_() for t in _pair())
    out1, out2 = bdam(f1, f2)
    (out1 * torch.randn_like(out1) + out2 * torch.randn_like(out2)).sum().backward()
    for p in (bdam.add_scale, bdam.del_scale, f1, f2, bdam.layers[0].attention.q_b.weight):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_layer_uses_scaled_scorer_biases() -> None:
    """κ multiplies the scorer output: doubling κ_add equals doubling the add scorer's weight and bias."""
    torch.manual_seed(0)
    layer = BDAMLayer(DIM, GRID, HEADS)
    f1, f2 = _pair()
    out = layer(f1, f2, torch.tensor(2.0), torch.tensor(0.5))
    with torch.no_grad():
        layer.add_scorer.weight.mul_(2)
        layer.add_scorer.bias.mul_(2)
    ref = layer(f1, f2, torch.tensor(1.0), torch.tensor(0.5))
    torch.testing.assert_close(out[0], ref[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[1], ref[1], rtol=1e-5, atol=1e-5)


def test_paper_parameter_counts_on_meta() -> None:
    with torch.device("meta"):
        official = BDAM(768, 14, layers=3, heads=8, official_unused_params=True)
        plain = BDAM(768, 14, layers=3, heads=8)
    assert _count(official) == 22_621_256  # 3 × 7,540,418 + 2 scales
    assert _count(plain) == 22_621_256 - 3 * 2 * 1_536
    layer = official.layers[0]
    assert _count(layer.modulator) == 451_776
    assert _count(layer.attention) == 7_084_032
    assert _count(layer.norm_before) + _count(layer.norm_after) == 3_072
    assert _count(layer.add_scorer) + _count(layer.del_scorer) == 1_538


def test_bf16_autocast_cpu() -> None:
    torch.manual_seed(0)
    bdam = BDAM(DIM, GRID, layers=1, heads=HEADS)
    f1, f2 = _pair()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out1, out2 = bdam(f1, f2)
        (out1.float().sum() + out2.float().sum()).backward()
    assert out1.shape == (2, L, DIM) and torch.isfinite(out1.float()).all()
    assert bdam.add_scale.grad is not None and torch.isfinite(bdam.add_scale.grad)
