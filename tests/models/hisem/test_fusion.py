"""HiSemFusion and its config: composition, ablations, strict config, paper parameter counts (docs/hisem.md)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from changecap.errors import ConfigError
from changecap.models.hisem.fusion import HiSemFusion, HiSemFusionConfig

DIM, GRID = 16, 3
L = GRID * GRID


def _tiny(**kw: Any) -> HiSemFusionConfig:
    base: dict[str, Any] = dict(
        dim=DIM, grid_size=GRID, bdam_layers=1, heads=2, num_experts=4, top_k=2, n_group=2, topk_group=1,
        n_shared_experts=1, expert_hidden=24, pwff_hidden=32, dropout=0.0,
    )  # fmt: skip
    base.update(kw)
    return HiSemFusionConfig(**base)


def _pair(b: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, L, DIM, generator=g), torch.randn(b, L, DIM, generator=g)


def _count(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# ------------------------------------------------------------------------------------------------ config
def test_defaults_are_the_paper_config_and_round_trip() -> None:
    c = HiSemFusionConfig()
    assert (c.dim, c.grid_size, c.bdam_layers, c.heads, c.modulator_reduction) == (768, 14, 3, 8, 4)
    assert (c.diff_lambda, c.add_scale_init, c.del_scale_init) == (0.9, 1.0, 0.5)
    assert (c.num_experts, c.top_k, c.n_group, c.topk_group, c.n_shared_experts) == (8, 2, 4, 2, 2)
    assert (c.expert_hidden, c.pwff_hidden, c.dropout, c.aux_loss_alpha, c.routed_scaling_factor) == (
        2048, 2048, 0.1, 0.001, 1.0,
    )  # fmt: skip
    assert c.use_bdam and c.use_hasd and not c.official_unused_params
    assert HiSemFusionConfig.from_dict(c.to_dict()) == c
    assert HiSemFusionConfig.from_dict({"top_k": 1}).top_k == 1  # missing keys take defaults
    c.validate()


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"nope": 1}, "fusion.nope"),
        ({"heads": 7}, "fusion.heads"),
        ({"top_k": 9}, "fusion.top_k"),
        ({"top_k": 5, "topk_group": 2}, "fusion.top_k"),  # only 2 groups × 2 experts are eligible
        ({"n_group": 3}, "fusion.n_group"),
        ({"topk_group": 5}, "fusion.topk_group"),
        ({"dim": 0}, "fusion.dim"),
        ({"dim": 9, "heads": 3}, "fusion.dim"),  # odd: the two position tables are dim/2 wide
        ({"grid_size": -1}, "fusion.grid_size"),
        ({"expert_hidden": 0}, "fusion.expert_hidden"),
        ({"bdam_layers": True}, "fusion.bdam_layers"),  # bool is not an int
        ({"dropout": 1.0}, "fusion.dropout"),
        ({"diff_lambda": float("nan")}, "fusion.diff_lambda"),
        ({"aux_loss_alpha": -1.0}, "fusion.aux_loss_alpha"),
        ({"routed_scaling_factor": 0}, "fusion.routed_scaling_factor"),
        ({"n_shared_experts": -1}, "fusion.n_shared_experts"),
        ({"use_bdam": "yes"}, "fusion.use_bdam"),
    ],
)
def test_from_dict_errors_name_the_field(patch: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        HiSemFusionConfig.from_dict(patch)
    assert info.value.field == field
    assert "\n" not in str(info.value)


def test_from_dict_prefix_and_constructor_validation() -> None:
    with pytest.raises(ConfigError, match=r"model\.fusion\.heads"):
        HiSemFusionConfig.from_dict({"heads": 5}, prefix="model.fusion")
    with pytest.raises(ConfigError, match=r"fusion\.n_group"):
        HiSemFusion(_tiny(n_group=3))


# ------------------------------------------------------------------------------------------------ module
def test_paper_parameter_counts_on_meta() -> None:
    with torch.device("meta"):
        official = HiSemFusion(HiSemFusionConfig(official_unused_params=True))
        plain = HiSemFusion(HiSemFusionConfig())
    assert _count(official) == 81_253_192
    assert _count(official.position) == 10_752
    assert official.bdam is not None and _count(official.bdam) == 22_621_256
    assert official.hasd is not None and _count(official.hasd) == 58_619_648
    assert _count(official.final_norm) == 1_536
    assert _count(plain) == 81_253_192 - 3 * 2 * 1_536  # without the never-used official norms
    assert len(official.state_dict()) == 188  # same number of entries as the official encoder_trans_dict


def test_forward_contract_training_with_ground_truth_route() -> None:
    torch.manual_seed(0)
    fusion = HiSemFusion(_tiny())
    f1, f2 = _pair(4)
    memory, logits = fusion(f1, f2, route=torch.tensor([1, 0, 0, 1]))
    assert memory.shape == (4, L, DIM) and logits is not None and logits.shape == (4, 2)
    assert fusion.last_route is not None and fusion.last_route.tolist() == [1, 0, 0, 1]
    assert fusion.aux_loss.ndim == 0 and fusion.aux_loss.item() > 0
    (memory.square().mean() + fusion.aux_loss + logits.logsumexp(-1).mean()).backward()
    for name, p in fusion.named_parameters():
        if name.startswith("hasd.changed.moe.experts."):
            continue  # an expert may receive no token
        assert p.grad is not None, name


def test_eval_uses_router_argmax_and_zero_aux_loss() -> None:
    torch.manual_seed(0)
    fusion = HiSemFusion(_tiny()).eval()
    f1, f2 = _pair(3)
    with torch.no_grad():
        memory, logits = fusion(f1, f2)
    assert logits is not None and fusion.last_route is not None
    assert fusion.last_route.tolist() == logits.argmax(-1).tolist()
    assert fusion.aux_loss.item() == 0.0
    assert torch.isfinite(memory).all()


def test_memory_is_layer_norm_of_both_dates_plus_plain_fusion_without_bdam_and_hasd() -> None:
    torch.manual_seed(0)
    fusion = HiSemFusion(_tiny(use_bdam=False, use_hasd=False)).eval()
    assert fusion.bdam is None and fusion.hasd is None and fusion.plain_fusion is not None
    assert not any(n.startswith(("bdam.", "hasd.")) for n, _ in fusion.named_parameters())
    f1, f2 = _pair(2)
    memory, logits = fusion(f1, f2, route=torch.tensor([1, 1]))  # route is ignored without HASD
    assert logits is None
    assert fusion.last_route is not None and fusion.last_route.tolist() == [0, 0]
    assert fusion.aux_loss.item() == 0.0
    pos = fusion.position()  # [L, D], added to both dates
    a, b = f1 + pos, f2 + pos
    torch.testing.assert_close(memory, fusion.final_norm(a + b + fusion.plain_fusion(a, b)))


def test_bad_input_shapes_rejected() -> None:
    fusion = HiSemFusion(_tiny())
    f1, f2 = _pair(2)
    with pytest.raises(ValueError, match=r"\[B, 9, 16\]"):
        fusion(f1[:, :-1], f2[:, :-1])
    with pytest.raises(ValueError):
        fusion(f1, f2[:1])


def test_official_unused_params_do_not_change_the_function() -> None:
    torch.manual_seed(0)
    plain = HiSemFusion(_tiny(bdam_layers=2)).eval()
    official = HiSemFusion(_tiny(bdam_layers=2, official_unused_params=True)).eval()
    missing, unexpected = official.load_state_dict(plain.state_dict(), strict=False)
    assert unexpected == [] and all(".norm_add." in k or ".norm_del." in k for k in missing) and len(missing) == 8
    f1, f2 = _pair(2)
    with torch.no_grad():
        torch.testing.assert_close(official(f1, f2)[0], plain(f1, f2)[0])


def test_bf16_autocast_cpu_forward_backward() -> None:
    torch.manual_seed(0)
    fusion = HiSemFusion(_tiny())
    f1, f2 = _pair(3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        memory, logits = fusion(f1, f2, route=torch.tensor([0, 1, 1]))
        loss = memory.float().square().mean() + fusion.aux_loss
    loss.backward()
    assert logits is not None and logits.dtype == torch.float32
    assert memory.shape == (3, L, DIM) and torch.isfinite(memory.float()).all()
    assert fusion.bdam is not None and fusion.bdam.add_scale.grad is not None
