"""BCSF: shapes, counts, forms, date-swap behaviour, reference formula, gradients, errors (docs/semantic_cc.md)."""

from __future__ import annotations

import pytest
import torch

from changecap.errors import ModelError
from changecap.models.semantic_cc.bcsf import BCSF

DIM, GRID = 8, 4


def _count(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _tokens(b: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(2 * b, GRID, GRID, DIM, generator=torch.Generator().manual_seed(seed))  # [2B, H, W, C]


def _randomise(m: torch.nn.Module, seed: int = 1) -> None:
    """Small random weights everywhere (the constant gate init would hide ordering mistakes)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))


def _swap_dates(x: torch.Tensor) -> torch.Tensor:
    b = x.shape[0] // 2
    return torch.cat([x[b:], x[:b]], dim=0)


@pytest.mark.parametrize("form", ["paper", "code"])
def test_shape_is_preserved(form: str) -> None:
    assert BCSF(DIM, GRID, form)(_tokens()).shape == (4, GRID, GRID, DIM)


def test_parameter_counts_at_spec_size() -> None:
    with torch.device("meta"):
        paper, code = BCSF(1024, 16, "paper"), BCSF(1024, 16, "code")
    assert _count(paper) == 6_300_675
    assert _count(code) == 4_203_522
    assert paper.down_channel is None and len(paper.channel_ffns) == 2
    assert code.down_channel is not None and len(code.channel_ffns) == 1
    assert paper.spatial_gate.bias is not None and code.spatial_gate.bias is None


def test_init_follows_the_released_code() -> None:
    m = BCSF(DIM, GRID, "paper")
    torch.testing.assert_close(m.spatial_gate.weight, torch.full((1, 2 * DIM), 1 / (2 * DIM)))
    torch.testing.assert_close(m.spatial_gate.bias, torch.zeros(1))
    for gate in m.channel_gates:
        assert gate.weight.shape == (1, 2 * GRID * GRID)
        torch.testing.assert_close(gate.weight, torch.ones_like(gate.weight))


def _reference(m: BCSF, x: torch.Tensor) -> torch.Tensor:
    """Eqs. (2)–(3) written in the conv layout [B, C, H, W] of the paper, for both forms."""
    b = x.shape[0] // 2
    f1, f2 = x[:b].permute(0, 3, 1, 2), x[b:].permute(0, 3, 1, 2)  # [B, C, H, W]
    w_sf = m.spatial_gate.weight[0]  # [2C]
    b_sf = m.spatial_gate.bias[0] if m.spatial_gate.bias is not None else 0.0

    def ffn(seq: torch.nn.Sequential, f: torch.Tensor) -> torch.Tensor:  # 1×1 convs
        h = torch.einsum("oc,bchw->bohw", seq[0].weight, f) + seq[0].bias[:, None, None]
        h = torch.nn.functional.gelu(h)
        return torch.einsum("oc,bchw->bohw", seq[2].weight, h) + seq[2].bias[:, None, None]

    def phi_sf(f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        s = torch.einsum("c,bchw->bhw", w_sf, torch.cat([f, g], 1)) + b_sf  # [B, H, W]
        return f * torch.sigmoid(s)[:, None]

    def phi_cf(k: int, f: torch.Tensor, g: torch.Tensor, filtered: torch.Tensor | None = None) -> torch.Tensor:
        """Gate k from [f ; g]_flat applied to ``filtered`` (default f)."""
        flat = torch.cat([f.flatten(2), g.flatten(2)], dim=2)  # [B, C, 2hw]
        gate = torch.sigmoid(flat @ m.channel_gates[k].weight[0] + m.channel_gates[k].bias[0])  # [B, C]
        return (f if filtered is None else filtered) * gate[:, :, None, None]

    ffn_cf = [m.channel_ffns[0], m.channel_ffns[-1]]
    if m.form == "paper":
        out1 = f1 + ffn(m.spatial_ffn, phi_sf(f1, f2)) + ffn(ffn_cf[0], phi_cf(0, f1, f2))
        out2 = f2 + ffn(m.spatial_ffn, phi_sf(f2, f1)) + ffn(ffn_cf[1], phi_cf(1, f2, f1))
    else:
        s = torch.sigmoid(torch.einsum("c,bchw->bhw", w_sf, torch.cat([f1, f2], 1)))[:, None]  # one map
        out1 = f1 + ffn(m.spatial_ffn, f1 * s) + ffn(ffn_cf[0], phi_cf(0, f1, f2))
        out2 = f2 + ffn(m.spatial_ffn, f2 * s) + ffn(ffn_cf[1], phi_cf(1, f1, f2, filtered=f2))
    return torch.cat([out1, out2], 0).permute(0, 2, 3, 1)  # [2B, H, W, C]


@pytest.mark.parametrize("form", ["paper", "code"])
def test_matches_the_equations_in_conv_layout(form: str) -> None:
    m = BCSF(DIM, GRID, form)
    _randomise(m)
    x = _tokens()
    torch.testing.assert_close(m(x), _reference(m, x))


def test_forms_differ_exactly_where_the_spec_says() -> None:
    """With the shared weights copied over, date 1 agrees (both read [F1 ; F2]) and date 2 does not."""
    paper, code = BCSF(DIM, GRID, "paper"), BCSF(DIM, GRID, "code")
    _randomise(paper)
    with torch.no_grad():
        paper.spatial_gate.bias.zero_()
        paper.channel_ffns[1].load_state_dict(paper.channel_ffns[0].state_dict())
        code.spatial_gate.weight.copy_(paper.spatial_gate.weight)
        code.channel_gates.load_state_dict(paper.channel_gates.state_dict())
        code.spatial_ffn.load_state_dict(paper.spatial_ffn.state_dict())
        code.channel_ffns[0].load_state_dict(paper.channel_ffns[0].state_dict())
    x = _tokens()
    out_p, out_c = paper(x), code(x)
    torch.testing.assert_close(out_p[:2], out_c[:2])
    assert not torch.allclose(out_p[2:], out_c[2:], atol=1e-4)


def test_paper_form_swaps_outputs_when_per_date_modules_are_equal() -> None:
    """[self ; other] ordering makes the filter date-symmetric up to its per-date channel gate and FFN."""
    m = BCSF(DIM, GRID, "paper")
    _randomise(m)
    x = _tokens()
    # generic per-date weights: not equivariant (date 1 and date 2 are filtered by different modules)
    assert not torch.allclose(m(_swap_dates(x)), _swap_dates(m(x)), atol=1e-4)
    with torch.no_grad():
        m.channel_gates[1].load_state_dict(m.channel_gates[0].state_dict())
        m.channel_ffns[1].load_state_dict(m.channel_ffns[0].state_dict())
    torch.testing.assert_close(m(_swap_dates(x)), _swap_dates(m(x)))


def test_code_form_is_not_date_symmetric_even_with_equal_gates() -> None:
    m = BCSF(DIM, GRID, "code")
    _randomise(m)
    with torch.no_grad():
        m.channel_gates[1].load_state_dict(m.channel_gates[0].state_dict())
    x = _tokens()
    assert not torch.allclose(m(_swap_dates(x)), _swap_dates(m(x)), atol=1e-4)


@pytest.mark.parametrize("form", ["paper", "code"])
def test_pairs_are_independent(form: str) -> None:
    """Rows i and B+i form a pair: a batch of 3 pairs equals the three pairs run one by one."""
    m = BCSF(DIM, GRID, form)
    _randomise(m)
    x = _tokens(b=3)
    out = m(x)
    for i in range(3):
        single = m(x[[i, 3 + i]])
        torch.testing.assert_close(single, out[[i, 3 + i]])


@pytest.mark.parametrize("form", ["paper", "code"])
def test_gradient_reaches_every_used_parameter(form: str) -> None:
    m = BCSF(DIM, GRID, form)
    x = _tokens()
    weights = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    (m(x) * weights).sum().backward()
    for name, p in m.named_parameters():
        if name.startswith("down_channel"):
            assert p.grad is None, "down_channel is created but never used"
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    "shape",
    [
        (4, GRID + 1, GRID, DIM),
        (4, GRID, GRID, DIM + 1),
        (3, GRID, GRID, DIM),
        (0, GRID, GRID, DIM),
        (4, GRID * GRID, DIM),
    ],
)
def test_wrong_shapes_give_one_line_model_error(shape: tuple[int, ...]) -> None:
    with pytest.raises(ModelError, match=r"\[2B, 4, 4, 8\]") as err:
        BCSF(DIM, GRID)(torch.zeros(shape))
    assert "\n" not in str(err.value)


def test_unknown_form_is_rejected() -> None:
    with pytest.raises(ModelError, match="form"):
        BCSF(DIM, GRID, "both")  # type: ignore[arg-type]
