"""Aggregation neck: intra/inter-task attention, unit residuals, counts, module names (docs/semantic_cc.md)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from changecap.errors import ModelError
from changecap.models.semantic_cc.neck import (
    InterTaskAttention,
    IntraTaskAttention,
    SemanticAggregationNeck,
    TokenLayerNorm,
)

ENC, CC, CD, L = 12, 8, 4, 6


def _count(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _neck(units: int = 2, symmetric: bool = False) -> SemanticAggregationNeck:
    torch.manual_seed(0)
    return SemanticAggregationNeck(units, ENC, CC, CD, cc_heads=2, cd_heads=2, symmetric_inter=symmetric).eval()


def _streams(n: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, L, ENC, generator=g), torch.randn(n, L, CD, generator=g)


# ------------------------------------------------------------------------------------------------ counts
def test_parameter_counts_at_spec_size() -> None:
    with torch.device("meta"):
        assert _count(IntraTaskAttention(1408, 16)) == 15_872_384
        assert _count(IntraTaskAttention(1408, 1408)) == 15_872_384  # heads do not change the count
        assert _count(IntraTaskAttention(256, 8)) == 526_592
        assert _count(IntraTaskAttention(256, 256)) == 526_592
        assert _count(InterTaskAttention(1408, 256)) == 94_622_080
        assert _count(SemanticAggregationNeck(units=2)) == 223_485_312
        assert _count(SemanticAggregationNeck(units=3)) == 334_506_368


# ------------------------------------------------------------------------------------------------ intra
@pytest.mark.parametrize("heads", [1, 2, 8])
def test_intra_task_attention_against_dense_reference(heads: int) -> None:
    torch.manual_seed(0)
    m = IntraTaskAttention(CC, heads)
    x = torch.randn(3, L, CC)
    d = CC // heads

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.view(3, L, heads, d).transpose(1, 2)  # [N, h, L, d]

    q, k, v = split(m.q_proj(x)), split(m.k_proj(x)), split(m.v_proj(x))
    probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)
    a = m.out_proj((probs @ v).transpose(1, 2).reshape(3, L, CC))
    u = F.layer_norm(a, (CC,), m.norm.weight, m.norm.bias, 1e-6)
    expected = u + m.ffn[2](F.gelu(m.ffn[0](u)))
    torch.testing.assert_close(m(x), expected)
    assert m.norm.eps == 1e-6 and m.ffn[0].out_features == 2 * CC


def test_intra_task_attention_rejects_bad_heads_and_shapes() -> None:
    with pytest.raises(ModelError, match="divisible"):
        IntraTaskAttention(CC, 3)
    with pytest.raises(ModelError, match=r"\[N, L, 8\]"):
        IntraTaskAttention(CC, 2)(torch.zeros(2, L, CC + 1))


# ------------------------------------------------------------------------------------------------ inter
def test_inter_task_attention_against_hand_computed_example() -> None:
    """dim_a = 3 (CC), dim_b = 2 (CD): S_k = x_aᵀ W_k x_b + b_k, then gate, concat, linear, sigmoid, LayerNorm."""
    m = InterTaskAttention(3, 2)
    w = torch.tensor(
        [[[0.5, -1.0], [0.2, 0.3], [-0.4, 0.1]], [[1.0, 0.0], [-0.5, 0.7], [0.3, -0.2]]]
    )  # [k = 2, a = 3, b = 2]
    bias_s = torch.tensor([0.1, -0.2])
    w_p = torch.arange(15, dtype=torch.float32).view(3, 5) / 10 - 0.7  # [3, 3 + 2]
    b_p = torch.tensor([0.05, -0.1, 0.2])
    gamma, beta = torch.tensor([1.0, 2.0, 0.5]), torch.tensor([0.0, -1.0, 0.3])
    with torch.no_grad():
        m.similarity.weight.copy_(w)
        m.similarity.bias.copy_(bias_s)
        m.proj.weight.copy_(w_p)
        m.proj.bias.copy_(b_p)
        m.norm.weight.copy_(gamma)
        m.norm.bias.copy_(beta)
    x_a = torch.tensor([[[1.0, -2.0, 0.5], [0.0, 1.0, 3.0]]])  # [1, 2 tokens, 3]
    x_b = torch.tensor([[[2.0, -1.0], [0.5, 0.5]]])  # [1, 2 tokens, 2]

    expected = torch.zeros(1, 2, 3)
    for t in range(2):
        a, b = x_a[0, t], x_b[0, t]
        s = torch.zeros(2)
        for k in range(2):
            for i in range(3):
                for j in range(2):
                    s[k] += a[i] * w[k, i, j] * b[j]
            s[k] += bias_s[k]
        delta = b * torch.sigmoid(s)
        z = torch.sigmoid(w_p @ torch.cat([a, delta]) + b_p)
        mean = z.mean()
        var = ((z - mean) ** 2).mean()  # biased variance, as LayerNorm
        expected[0, t] = (z - mean) / torch.sqrt(var + 1e-6) * gamma + beta
    torch.testing.assert_close(m(x_a, x_b), expected)


def test_inter_task_attention_rejects_mismatched_streams() -> None:
    m = InterTaskAttention(3, 2)
    with pytest.raises(ModelError, match="equal"):
        m(torch.zeros(1, 2, 3), torch.zeros(1, 3, 2))
    with pytest.raises(ModelError, match=r"\[N, L, 2\]"):
        m(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3))


# ------------------------------------------------------------------------------------------------ neck
@pytest.mark.parametrize("symmetric", [False, True])
def test_neck_shapes(symmetric: bool) -> None:
    raw, cd = _streams()
    f_cc, f_cd = _neck(symmetric=symmetric)(raw, cd)
    assert f_cc.shape == (4, L, CC) and f_cd.shape == (4, L, CD)


def test_one_unit_follows_the_update_rule() -> None:
    neck = _neck(units=1)
    raw, cd = _streams()
    unit = neck.units[0]
    x_cc = neck.cc_proj(raw)
    cd_i, cc_i = unit.intra_cd(cd), unit.intra_cc(x_cc)
    f_cc, f_cd = neck(raw, cd)
    torch.testing.assert_close(f_cc, x_cc + unit.inter(cc_i, cd_i))
    torch.testing.assert_close(f_cd, cd + cd_i)


def test_symmetric_unit_adds_the_mirrored_layer() -> None:
    neck = _neck(units=1, symmetric=True)
    raw, cd = _streams()
    unit = neck.units[0]
    assert unit.inter_cd is not None and unit.inter_cd.similarity.weight.shape == (CC, CD, CC)
    cd_i, cc_i = unit.intra_cd(cd), unit.intra_cc(neck.cc_proj(raw))
    _, f_cd = neck(raw, cd)
    torch.testing.assert_close(f_cd, cd + cd_i + unit.inter_cd(cd_i, cc_i))


def test_zeroed_layers_make_the_neck_an_identity_after_the_projection() -> None:
    """Zero LayerNorm affines and FFN outputs: every intra and inter output is 0, so only the residuals remain."""
    neck = _neck(units=2, symmetric=True)
    with torch.no_grad():
        for unit in neck.units:
            for intra in (unit.intra_cc, unit.intra_cd):
                intra.norm.weight.zero_()
                intra.norm.bias.zero_()
                intra.ffn[2].weight.zero_()
                intra.ffn[2].bias.zero_()
            for inter in (unit.inter, unit.inter_cd):
                inter.norm.weight.zero_()
                inter.norm.bias.zero_()
    raw, cd = _streams()
    f_cc, f_cd = neck(raw, cd)
    torch.testing.assert_close(f_cc, neck.cc_proj(raw))
    torch.testing.assert_close(f_cd, cd)


def test_cd_stream_is_untouched_by_the_cc_stream_without_symmetric_inter() -> None:
    neck = _neck()
    raw, cd = _streams()
    raw2, _ = _streams(seed=5)
    torch.testing.assert_close(neck(raw, cd)[1], neck(raw2, cd)[1])
    assert not torch.allclose(neck(raw, cd)[0], neck(raw2, cd)[0])


@pytest.mark.parametrize("symmetric", [False, True])
def test_batch_of_four_pairs_equals_four_single_pairs(symmetric: bool) -> None:
    neck = _neck(symmetric=symmetric)
    raw, cd = _streams(n=8)  # rows 0..3 before, 4..7 after
    f_cc, f_cd = neck(raw, cd)
    for i in range(4):
        rows = [i, 4 + i]
        s_cc, s_cd = neck(raw[rows], cd[rows])
        torch.testing.assert_close(s_cc, f_cc[rows], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(s_cd, f_cd[rows], atol=1e-5, rtol=1e-5)


def test_module_names_split_into_cd_and_cc_sides() -> None:
    neck = _neck(units=2)
    cd_side = {n for n, _ in neck.named_parameters() if ".intra_cd." in n}
    cc_side = {n for n, _ in neck.named_parameters() if n.startswith("cc_proj.") or ".intra_cc." in n or ".inter." in n}
    assert cd_side and cc_side and not cd_side & cc_side
    assert cd_side | cc_side == {n for n, _ in neck.named_parameters()}
    assert {n.split(".")[2] for n in cd_side | cc_side if n.startswith("units.")} == {"intra_cc", "intra_cd", "inter"}
    assert not any(".inter_cd." in n for n, _ in neck.named_parameters())


def test_neck_rejects_bad_inputs() -> None:
    neck = _neck()
    raw, cd = _streams()
    with pytest.raises(ModelError, match="equal"):
        neck(raw, cd[:2])
    with pytest.raises(ModelError, match=r"\[N, L, 12\]"):
        neck(cd, cd)
    with pytest.raises(ModelError, match="unit"):
        SemanticAggregationNeck(units=0)


def test_intra_residual_keeps_token_differences_under_uniform_attention() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, L, CC)  # [N, L, D]
    code, residual = IntraTaskAttention(CC, 2), IntraTaskAttention(CC, 2, residual=True)
    residual.load_state_dict(code.state_dict())  # the option adds no parameters
    for layer in (code, residual):
        with torch.no_grad():  # zero queries: every token attends uniformly (a from-scratch start, in the limit)
            layer.q_proj.weight.zero_()
            layer.q_proj.bias.zero_()
    same = code(x)
    assert torch.allclose(same, same[:, :1].expand_as(same), atol=1e-6)  # code form: one output for every token
    kept = residual(x)
    u = F.layer_norm(x + code.out_proj(code.v_proj(x).mean(dim=1, keepdim=True)), (CC,), code.norm.weight,
                     code.norm.bias, eps=1e-6)  # fmt: skip
    assert torch.allclose(kept, u + residual.ffn(u), atol=1e-5)  # U = LN(X + A)
    assert float(kept.std(dim=1).mean()) > 0.5
    neck = SemanticAggregationNeck(1, ENC, CC, CD, cc_heads=2, cd_heads=2, intra_residual=True)
    assert all(m.residual for m in (neck.units[0].intra_cc, neck.units[0].intra_cd))


# ------------------------------------------------------------------------------------------------ LayerNorm eps
def _layer_norm_reference(x: torch.Tensor, eps: float) -> torch.Tensor:
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)  # biased, as LayerNorm
    return (x - mean) / torch.sqrt(var + eps)


def test_ln_eps_reaches_every_layer_norm_of_the_units() -> None:
    default = SemanticAggregationNeck(2, ENC, CC, CD, cc_heads=2, cd_heads=2, symmetric_inter=True)
    code = SemanticAggregationNeck(2, ENC, CC, CD, cc_heads=2, cd_heads=2, symmetric_inter=True, ln_eps=0.0)
    for neck, eps in ((default, 1e-6), (code, 0.0)):
        norms = [m for m in neck.modules() if isinstance(m, torch.nn.LayerNorm)]
        assert len(norms) == 2 * 4  # per unit: intra_cc, intra_cd, inter, inter_cd
        assert all(isinstance(m, TokenLayerNorm) and m.eps == eps for m in norms)
    assert code.state_dict().keys() == default.state_dict().keys()  # the option adds no tensor
    with pytest.raises(ModelError, match="eps"):
        SemanticAggregationNeck(1, ENC, CC, CD, cc_heads=2, cd_heads=2, ln_eps=-1e-6)


def test_eps_zero_is_the_released_layer_norm() -> None:
    """Tokens whose variance is about 1e-6: eps 0 and eps 1e-6 differ by about a third of the normalised value."""
    x = 1e-3 * torch.randn(3, L, CC, generator=torch.Generator().manual_seed(0))  # [N, L, D]
    norm = TokenLayerNorm(CC, eps=0.0)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2.0)
        norm.bias.uniform_(-1.0, 1.0)
    expected = _layer_norm_reference(x, 0.0) * norm.weight + norm.bias
    torch.testing.assert_close(norm(x), expected)
    torch.testing.assert_close(norm(x), F.layer_norm(x, (CC,), norm.weight, norm.bias, eps=0.0))
    assert (norm(x) - (_layer_norm_reference(x, 1e-6) * norm.weight + norm.bias)).abs().max() > 0.1
    m = IntraTaskAttention(CC, 2, ln_eps=0.0)  # the unit's norm: U = LN(A), A scaled down to variance ≈ 1e-6
    with torch.no_grad():
        m.out_proj.weight.mul_(1e-3)
        m.out_proj.bias.mul_(1e-3)
    x = torch.randn(2, L, CC, generator=torch.Generator().manual_seed(1))
    a = m.out_proj(m.v_proj(x).mean(dim=1, keepdim=True).expand(-1, L, -1))  # uniform attention: q = 0 below
    with torch.no_grad():
        m.q_proj.weight.zero_()
        m.q_proj.bias.zero_()
    u = _layer_norm_reference(a, 0.0) * m.norm.weight + m.norm.bias
    torch.testing.assert_close(m(x), u + m.ffn(u), atol=1e-5, rtol=1e-5)


def test_eps_zero_gives_a_constant_token_the_bias_not_nan() -> None:
    """The inter-task layer's sigmoid makes a constant token when its projection is zero: σ(0) = 0.5 everywhere."""
    m = InterTaskAttention(CC, CD, ln_eps=0.0)
    with torch.no_grad():
        m.proj.weight.zero_()
        m.proj.bias.zero_()
        m.norm.bias.uniform_(-1.0, 1.0)
    x_a = torch.randn(2, L, CC, requires_grad=True)
    out = m(x_a, torch.randn(2, L, CD))
    torch.testing.assert_close(out, m.norm.bias.expand_as(out))
    assert torch.isnan(F.layer_norm(torch.full((CC,), 0.5), (CC,), eps=0.0)).all()  # what eps 0 alone gives
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)
    assert torch.isfinite(x_a.grad).all()
    norm = TokenLayerNorm(CC, eps=0.0)  # a batch mixing a constant token and ordinary ones
    x = torch.randn(3, CC)
    x[1] = 2.0
    out = norm(x)
    torch.testing.assert_close(out[1], norm.bias)
    torch.testing.assert_close(out[[0, 2]], F.layer_norm(x[[0, 2]], (CC,), eps=0.0))


def test_eps_zero_under_bf16_autocast_runs_as_layer_norm_does() -> None:
    x = torch.randn(2, L, CC).bfloat16()
    x[0, 1] = 0.25  # a constant token
    norm = TokenLayerNorm(CC, eps=0.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = norm(x)
        plain = F.layer_norm(x, (CC,), norm.weight, norm.bias, eps=0.0)
    assert out.dtype == plain.dtype
    torch.testing.assert_close(out[1], plain[1])
    torch.testing.assert_close(out[0, 1], norm.bias.to(out.dtype))
