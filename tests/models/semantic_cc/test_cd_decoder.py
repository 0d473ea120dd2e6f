"""CD decoder: SimpleFPN levels, head, output sizes, counts, date order, losses, prediction (docs/semantic_cc.md)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from changecap.errors import ModelError
from changecap.models.semantic_cc.cd_decoder import (
    ChangeDetectionDecoder,
    LayerNorm2d,
    change_detection_loss,
    predict_mask,
)

IN, GRID, SIZE = 8, 4, 16


def _count(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _features(b: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(2 * b, IN, GRID, GRID, generator=torch.Generator().manual_seed(seed))  # [2B, C, g, g]


def _decoder(form: str = "code", num_classes: int = 2) -> ChangeDetectionDecoder:
    torch.manual_seed(0)
    return ChangeDetectionDecoder(IN, GRID, SIZE, num_classes, form, fpn_dim=8).eval()  # type: ignore[arg-type]


def test_parameter_counts_at_spec_size() -> None:
    with torch.device("meta"):
        m = ChangeDetectionDecoder()
    assert _count(m.fpn) == 3_904_640
    assert _count(m.head) == 658_946
    assert _count(m) == 3_904_640 + 658_946


@pytest.mark.parametrize("form", ["code", "paper"])
@pytest.mark.parametrize("num_classes", [1, 2])
def test_output_size(form: str, num_classes: int) -> None:
    out = _decoder(form, num_classes)(_features())
    assert out.shape == (2, num_classes, SIZE, SIZE)


def test_pyramid_levels_of_both_forms() -> None:
    pair = torch.randn(2, 2 * IN, GRID, GRID)
    code = [tuple(t.shape) for t in _decoder("code").fpn(pair)]
    assert code == [(2, 8, 16, 16), (2, 8, 8, 8), (2, 8, 4, 4), (2, 8, 2, 2), (2, 8, 1, 1)]
    paper = ChangeDetectionDecoder(IN, GRID, SIZE, 1, "paper")  # default width: the concatenated 2·in_dim
    assert [tuple(t.shape) for t in paper.fpn(pair)] == [(2, 16, 16, 16), (2, 16, 8, 8), (2, 16, 4, 4), (2, 16, 2, 2)]
    assert len(paper.head.level_convs) == 4


def test_spec_size_level_shapes_on_meta() -> None:
    with torch.device("meta"):
        m = ChangeDetectionDecoder()
        levels = m.fpn(torch.empty(1, 512, 16, 16))
        out = m(torch.empty(2, 256, 16, 16))
    assert [tuple(t.shape[1:]) for t in levels] == [
        (256, 64, 64),
        (256, 32, 32),
        (256, 16, 16),
        (256, 8, 8),
        (256, 4, 4),
    ]
    assert out.shape == (1, 2, 256, 256)


def test_dates_are_concatenated_before_then_after() -> None:
    m = _decoder()
    seen: list[torch.Tensor] = []
    m.fpn.register_forward_hook(lambda _m, args, _out: seen.append(args[0]))
    f = _features()
    m(f)
    torch.testing.assert_close(seen[0], torch.cat([f[:2], f[2:]], dim=1))


@pytest.mark.parametrize("form", ["code", "paper"])
def test_pairs_are_independent_in_eval_mode(form: str) -> None:
    m = _decoder(form)
    f = _features(b=3)
    out = m(f)
    for i in range(3):
        torch.testing.assert_close(m(f[[i, 3 + i]]), out[i : i + 1], atol=1e-5, rtol=1e-5)


def _layer_norm_2d_reference(x: torch.Tensor, eps: float) -> torch.Tensor:
    mean = x.mean(1, keepdim=True)
    var = x.var(1, unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps)


def test_layer_norm_2d_normalises_channels() -> None:
    x = torch.randn(2, 5, 3, 4)
    torch.testing.assert_close(LayerNorm2d(5, eps=1e-6)(x), _layer_norm_2d_reference(x, 1e-6))


def test_fpn_norms_use_the_released_eps() -> None:
    """Every LN2d of the pyramid has mmcv's default eps 1e-5 (the released config sets none): on channels whose
    variance is about 1e-5 the normalised values differ from eps 1e-6 by about a third."""
    norms = [m for m in _decoder().modules() if isinstance(m, LayerNorm2d)]
    assert len(norms) == 9  # the first level's inner norm + a lateral and an output norm per level (4 levels)
    x = 3e-3 * torch.randn(2, 8, 3, 4, generator=torch.Generator().manual_seed(0))  # channel variance ≈ 1e-5
    for norm in norms:
        out = norm(x)
        torch.testing.assert_close(out, _layer_norm_2d_reference(x, 1e-5))
        assert (out - _layer_norm_2d_reference(x, 1e-6)).abs().max() > 0.1


def test_gradient_reaches_every_parameter() -> None:
    m = _decoder().train()
    change_detection_loss(m(_features()), torch.randint(0, 2, (2, SIZE, SIZE)), "ce").backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())


@pytest.mark.parametrize(
    "shape", [(4, IN + 1, GRID, GRID), (4, IN, GRID + 1, GRID + 1), (3, IN, GRID, GRID), (4, GRID * GRID, IN)]
)
def test_wrong_shapes_give_one_line_model_error(shape: tuple[int, ...]) -> None:
    with pytest.raises(ModelError, match=r"\[2B, 8, 4, 4\]") as err:
        _decoder()(torch.zeros(shape))
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------------ loss, prediction
def _mask() -> torch.Tensor:
    mask = torch.randint(0, 2, (2, 4, 4), generator=torch.Generator().manual_seed(1))
    mask[0, 0, :2] = 255
    mask[1, 3, 3] = 255
    return mask


def test_bce_loss_matches_torch_on_valid_pixels() -> None:
    logits = torch.randn(2, 1, 4, 4)
    mask = _mask()
    valid = mask != 255
    expected = F.binary_cross_entropy_with_logits(logits[:, 0][valid], mask[valid].float())
    torch.testing.assert_close(change_detection_loss(logits, mask, "bce"), expected)
    assert change_detection_loss(logits, mask, "bce").dim() == 0


def test_ce_loss_matches_torch_with_ignore_index() -> None:
    logits = torch.randn(2, 2, 4, 4)
    mask = _mask()
    expected = F.cross_entropy(logits, mask, ignore_index=255)
    torch.testing.assert_close(change_detection_loss(logits, mask, "ce"), expected)
    other = mask.clone()
    other[other == 255] = 7
    torch.testing.assert_close(change_detection_loss(logits, other, "ce", ignore_index=7), expected)


@pytest.mark.parametrize(("form", "classes"), [("bce", 1), ("ce", 2)])
def test_ignored_pixels_do_not_contribute(form: str, classes: int) -> None:
    logits = torch.randn(2, classes, 4, 4, requires_grad=True)
    mask = _mask()
    loss = change_detection_loss(logits, mask, form)  # type: ignore[arg-type]
    loss.backward()
    assert logits.grad is not None
    ignored = (mask == 255)[:, None].expand_as(logits)
    assert torch.all(logits.grad[ignored] == 0) and torch.any(logits.grad[~ignored] != 0)
    all_ignored = torch.full_like(mask, 255)
    zero = change_detection_loss(logits, all_ignored, form)  # type: ignore[arg-type]
    assert zero.item() == 0.0


def test_loss_rejects_wrong_inputs() -> None:
    mask = _mask()
    with pytest.raises(ModelError, match="1-channel"):
        change_detection_loss(torch.zeros(2, 2, 4, 4), mask, "bce")
    with pytest.raises(ModelError, match="2 class"):
        change_detection_loss(torch.zeros(2, 1, 4, 4), mask, "ce")
    with pytest.raises(ModelError, match=r"mask \[B, S, S\]"):
        change_detection_loss(torch.zeros(2, 2, 4, 4), mask[:, :2], "ce")
    with pytest.raises(ModelError, match="form"):
        change_detection_loss(torch.zeros(2, 2, 4, 4), mask, "dice")  # type: ignore[arg-type]


def test_predict_mask() -> None:
    two = torch.tensor([[[[0.0, 2.0]], [[1.0, -1.0]]]])  # [1, 2, 1, 2]
    assert predict_mask(two).tolist() == [[[1, 0]]]
    one = torch.tensor([[[[-0.5, 0.5, 0.0]]]])  # [1, 1, 1, 3]
    pred = predict_mask(one)
    assert pred.dtype == torch.long and pred.tolist() == [[[0, 1, 0]]]


@pytest.mark.parametrize("num_classes", [1, 2])
def test_prior_init_starts_every_pixel_at_the_change_prior(num_classes: int) -> None:
    torch.manual_seed(0)
    dec = ChangeDetectionDecoder(IN, GRID, SIZE, num_classes, "code", fpn_dim=8, prior_probability=0.03)
    # The head's last ReLU output is ≥ 0 and its weights are random, so only the bias fixes the mean: zero the
    # classifier's weights to see the prior itself.
    torch.nn.init.zeros_(dec.head.classifier.weight)
    logits = dec.eval()(_features())  # [B, K, S, S]
    p_change = torch.sigmoid(logits[:, 0]) if num_classes == 1 else logits.softmax(dim=1)[:, 1]
    torch.testing.assert_close(p_change, torch.full_like(p_change, 0.03))


def test_prior_outside_the_unit_interval_is_a_model_error() -> None:
    with pytest.raises(ModelError, match="change prior"):
        ChangeDetectionDecoder(IN, GRID, SIZE, 1, "code", fpn_dim=8, prior_probability=1.0)
