"""HASD: image-level hard routing, per-path sub-batches, fusion blocks, PWFF (docs/hisem.md)."""

from __future__ import annotations

import pytest
import torch

from changecap.models.hisem.hasd import HASD, FusionBlock, PositionwiseFeedForward, PreActResidualBlock

DIM, GRID = 16, 3
L = GRID * GRID


def _hasd(dropout: float = 0.0) -> HASD:
    torch.manual_seed(0)
    return HASD(
        DIM, GRID, num_experts=4, top_k=2, n_group=2, topk_group=1, n_shared_experts=1, expert_hidden=24,
        pwff_hidden=32, dropout=dropout,
    )  # fmt: skip


def _pair(b: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, L, DIM, generator=g), torch.randn(b, L, DIM, generator=g)


def test_forced_route_sends_samples_to_their_path_in_order() -> None:
    hasd = _hasd().eval()  # eval: BatchNorm uses running statistics, so a sub-batch equals per-sample processing
    f1, f2 = _pair(5)
    route = torch.tensor([1, 0, 1, 0, 0])
    out = hasd(f1, f2, route)
    assert out.output.shape == (5, L, DIM) and out.router_logits.shape == (5, 2)
    assert out.route.tolist() == [1, 0, 1, 0, 0] and out.route.dtype == torch.long
    for b in range(5):
        a, c = f1[b : b + 1], f2[b : b + 1]
        ref = hasd.unchanged(a, c) if route[b] == 0 else hasd.changed(a, c)[0]
        torch.testing.assert_close(out.output[b : b + 1], ref, rtol=1e-5, atol=1e-5)


def test_training_subbatches_use_their_own_batch_statistics() -> None:
    hasd = _hasd()  # training mode, dropout 0 → deterministic
    f1, f2 = _pair(4)
    route = torch.tensor([0, 1, 1, 0], dtype=torch.bool)  # bool accepted
    out = hasd(f1, f2, route)
    ref_u = hasd.unchanged(f1[[0, 3]], f2[[0, 3]])
    ref_c, aux = hasd.changed(f1[[1, 2]], f2[[1, 2]])
    torch.testing.assert_close(out.output[[0, 3]], ref_u, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.output[[1, 2]], ref_c, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.aux_loss, aux)
    assert out.aux_loss.item() > 0


@pytest.mark.parametrize("flag", [0, 1])
def test_empty_subbatch_in_training(flag: int) -> None:
    hasd = _hasd()
    f1, f2 = _pair(3)
    out = hasd(f1, f2, torch.full((3,), flag))
    assert out.output.shape == (3, L, DIM) and torch.isfinite(out.output).all()
    assert (out.aux_loss.item() > 0) == (flag == 1)  # balance loss only with changed samples


def test_eval_routes_by_argmax_and_has_no_aux_loss() -> None:
    hasd = _hasd().eval()
    f1, f2 = _pair(6)
    with torch.no_grad():
        # make the router decide by the sign of the first channel of the mean difference
        hasd.router.weight.zero_()
        hasd.router.weight[1, 0] = 1.0
        hasd.router.weight[0, 0] = -1.0
    out = hasd(f1, f2)
    expected = ((f2 - f1).mean(1)[:, 0] > 0).long()
    assert out.route.tolist() == expected.tolist() == out.router_logits.argmax(-1).tolist()
    torch.testing.assert_close(out.router_logits, (f2 - f1).mean(1) @ hasd.router.weight.T)
    assert out.aux_loss.item() == 0.0
    assert 0 < int(expected.sum()) < 6  # both paths exercised


def test_gradients_flow_through_both_paths_and_router() -> None:
    hasd = _hasd(dropout=0.1)
    f1, f2 = (t.requires_grad_() for t in _pair(4))
    out = hasd(f1, f2, torch.tensor([0, 1, 0, 1]))
    loss = (
        out.output.square().mean()
        + out.aux_loss
        + torch.nn.functional.cross_entropy(out.router_logits, torch.tensor([0, 1, 0, 1]))
    )
    loss.backward()
    for p in (
        hasd.router.weight,
        hasd.unchanged.ffn.fc1.weight,
        hasd.unchanged.fusion.reduce.weight,
        hasd.changed.fusion.residual.conv3x3.weight,
        hasd.changed.moe.gate.weight,
        f1,
        f2,
    ):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_bad_route_rejected() -> None:
    hasd = _hasd()
    f1, f2 = _pair(2)
    with pytest.raises(ValueError, match="shape"):
        hasd(f1, f2, torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="0 .* or 1"):
        hasd(f1, f2, torch.tensor([0, 2]))


def test_bf16_autocast_router_in_fp32() -> None:
    hasd = _hasd()
    f1, f2 = _pair(3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = hasd(f1, f2, torch.tensor([0, 1, 1]))
        (out.output.float().sum() + out.aux_loss).backward()
    assert out.router_logits.dtype == torch.float32
    assert out.output.shape == (3, L, DIM) and torch.isfinite(out.output.float()).all()
    assert any(e.up_proj.weight.grad is not None for e in hasd.changed.moe.experts)


def test_fusion_block_and_pwff_formulas() -> None:
    torch.manual_seed(0)
    block = FusionBlock(DIM, GRID).eval()
    f1, f2 = _pair(2)
    grid1 = f1.transpose(1, 2).reshape(2, DIM, GRID, GRID)  # [N, D, g, g]
    grid2 = f2.transpose(1, 2).reshape(2, DIM, GRID, GRID)
    x = block.reduce(torch.cat([grid1, grid2], 1))  # channels: before then after
    r = block.residual
    y = r.bn3(r.conv1x1(torch.relu(r.bn2(r.conv3x3(torch.relu(r.bn1(x)))))))
    ref = block.norm(torch.relu(x + y).flatten(2).transpose(1, 2))
    torch.testing.assert_close(block(f1, f2), ref, rtol=1e-5, atol=1e-5)
    ffn = PositionwiseFeedForward(DIM, 32, dropout=0.0)
    torch.testing.assert_close(ffn(f1), ffn.layer_norm(f1 + ffn.fc2(torch.relu(ffn.fc1(f1)))))


def test_paper_parameter_counts_on_meta() -> None:
    with torch.device("meta"):
        hasd = HASD(768, 14)

    def count(m: torch.nn.Module) -> int:
        return sum(p.numel() for p in m.parameters())

    assert count(hasd) == 58_619_648
    assert count(hasd.unchanged.fusion) == count(hasd.changed.fusion) == 7_086_336
    assert count(hasd.unchanged.fusion.reduce) == 1_180_416
    assert isinstance(hasd.unchanged.fusion.residual, PreActResidualBlock)
    assert count(hasd.unchanged.fusion.residual) == 5_904_384
    assert count(hasd.unchanged.ffn) == 3_150_080
    assert count(hasd.router) == 1_536 and hasd.router.bias is None
    assert count(hasd.changed.norm) == 1_536
