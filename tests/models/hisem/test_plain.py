"""Plain ConcatFusion baseline: shapes, no router, zero aux loss, learned positions, config errors, composition."""

from __future__ import annotations

import pytest
import torch

from changecap.errors import ConfigError, ModelError
from changecap.models import build_model
from changecap.models.hisem import ConcatFusion, ConcatFusionConfig, HiSem, tiny_config

D, G = 32, 4


def _pair(b: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(b, G * G, D, generator=g), torch.randn(b, G * G, D, generator=g)


@pytest.mark.parametrize("layers", [0, 2])
def test_shapes_no_router_zero_aux(layers: int) -> None:
    fusion = ConcatFusion(ConcatFusionConfig(dim=D, grid_size=G, layers=layers, heads=4)).eval()
    f1, f2 = _pair()
    memory, router = fusion(f1, f2)
    assert memory.shape == (2, G * G, D) and router is None
    assert fusion.aux_loss.dim() == 0 and float(fusion.aux_loss) == 0.0
    assert len(fusion.layers) == layers
    torch.testing.assert_close(fusion(f1, f2, route=torch.tensor([1, 0]))[0], memory)  # route is ignored


def test_fusion_depends_on_both_dates_and_position() -> None:
    fusion = ConcatFusion(ConcatFusionConfig(dim=D, grid_size=G, layers=1, heads=4)).eval()
    f1, f2 = _pair()
    memory, _ = fusion(f1, f2)
    assert not torch.allclose(fusion(f1, f1)[0], memory)
    same = torch.zeros(1, G * G, D)  # identical tokens everywhere: only the positions tell tokens apart
    out, _ = fusion(same, same)
    assert not torch.allclose(out[0, 0], out[0, 1])


def test_gradients_reach_every_parameter() -> None:
    fusion = ConcatFusion(ConcatFusionConfig(dim=D, grid_size=G, layers=2, heads=4)).train()
    f1, f2 = _pair()
    fusion(f1, f2)[0].square().mean().backward()
    assert all(p.grad is not None for p in fusion.parameters())


def test_traceable_layers_keep_the_weights_and_the_function() -> None:
    """What ONNX export swaps in (changecap's encoder layer, whose traced batch stays dynamic) computes what the
    torch layers did, from the same state dict."""
    torch.manual_seed(0)
    fusion = ConcatFusion(ConcatFusionConfig(dim=D, grid_size=G, layers=2, heads=4)).eval()
    f1, f2 = _pair(3)
    before, state = fusion(f1, f2)[0], fusion.state_dict()
    fusion.use_traceable_layers()
    assert not any(isinstance(m, torch.nn.TransformerEncoderLayer) for m in fusion.modules())
    after = fusion.state_dict()
    assert after.keys() == state.keys() and all(torch.equal(after[k], state[k]) for k in state)
    torch.testing.assert_close(fusion(f1, f2)[0], before)


def test_wrong_token_shape() -> None:
    fusion = ConcatFusion(ConcatFusionConfig(dim=D, grid_size=G, layers=1, heads=4))
    f1, f2 = _pair()
    with pytest.raises(ModelError, match=r"\[B, 16, 32\]"):
        fusion(f1[:, :-1], f2[:, :-1])


@pytest.mark.parametrize(
    ("d", "field"),
    [
        ({"dim": 30, "heads": 4}, "model.fusion.heads"),
        ({"layers": -1}, "model.fusion.layers"),
        ({"depth": 2}, "model.fusion.depth"),
    ],
)
def test_config_errors(d: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        ConcatFusionConfig.from_dict(d, prefix="model.fusion")


def test_plain_architecture_is_hisem_with_concat_fusion() -> None:
    torch.manual_seed(0)
    model = build_model(tiny_config(15, image_size=32, patch_size=8, dim=32, architecture="plain")).eval()
    assert isinstance(model, HiSem) and isinstance(model.fusion, ConcatFusion)
    image = torch.randn(2, 2, 3, 32, 32)
    tokens = torch.tensor([[2, 5, 6, 3, 0], [2, 7, 3, 0, 0]])
    out = model(image, tokens)
    assert out.logits.shape == (2, 5, 15) and out.router_logits is None and float(out.aux_loss) == 0.0
    seqs, prob = model.caption(image, max_length=6)
    assert len(seqs) == 2 and prob is None
