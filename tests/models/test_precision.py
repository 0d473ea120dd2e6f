"""bf16 inference with the weights cast once: bit-identical to bf16 autocast for every architecture; only the
weights autocast would cast are cast; tied weights stay."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import nn

from changecap.models import build_model, config_from_dict
from changecap.models.hisem import tiny_config
from changecap.models.precision import cast_matmul_weights
from tests.models.dfm.conftest import tiny as tiny_dfm
from tests.models.semantic_cc.conftest import tiny as tiny_scc

CD_TINY = {"architecture": "change_detection", "image_size": 64, "encoder": {"widths": [8, 16, 32], "blocks": 1},
           "decoder_dim": 8}  # fmt: skip


def _build(name: str) -> tuple[nn.Module, int]:
    torch.manual_seed(0)
    if name in ("hisem", "plain"):
        return build_model(tiny_config(20, image_size=32, patch_size=8, dim=32, architecture=name, max_length=12)), 32
    if name == "dfm":
        return build_model(config_from_dict(tiny_dfm())), 32
    if name == "semantic_cc":
        return build_model(config_from_dict(tiny_scc())), 64
    return build_model(config_from_dict(CD_TINY)), 64


def _outputs(model: nn.Module, images: torch.Tensor) -> Any:
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        if callable(getattr(model, "predict", None)):
            out = model.predict(images)
            return {k: v for k, v in out.items() if v is not None}
        return model.caption(images, max_length=10)


@pytest.mark.parametrize("name", ["hisem", "plain", "dfm", "semantic_cc", "change_detection"])
def test_cast_weights_give_bit_identical_outputs_to_autocast(name: str) -> None:
    model, size = _build(name)
    model.eval()
    cast = copy.deepcopy(model)
    n = cast_matmul_weights(cast)
    assert n > 0
    dtypes = {p.dtype for p in cast.parameters()}
    assert torch.bfloat16 in dtypes  # matmul weights
    images = torch.randn(3, 2, 3, size, size, generator=torch.Generator().manual_seed(1))  # [B, 2, 3, S, S]
    expected, got = _outputs(model, images), _outputs(cast, images)
    if isinstance(expected, dict):
        assert expected.keys() == got.keys()
        for k in expected:
            if isinstance(expected[k], torch.Tensor):
                assert torch.equal(expected[k], got[k]), k
            else:
                assert expected[k] == got[k], k
    else:
        (seqs, prob), (seqs2, prob2) = expected, got
        assert [list(map(int, s)) for s in seqs] == [list(map(int, s)) for s in seqs2]
        assert (prob is None and prob2 is None) or torch.equal(prob, prob2)


def test_only_owned_linear_and_conv_weights_are_cast() -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(10, 4)
            self.head = nn.Linear(4, 10, bias=False)
            self.head.weight = self.embed.weight  # tied, as language models do
            self.proj = nn.Linear(4, 4)
            self.conv = nn.Conv2d(3, 4, 3)
            self.norm = nn.LayerNorm(4)
            self.scale = nn.Parameter(torch.ones(4))

    m = Tied()
    assert cast_matmul_weights(m) == 4 * 4 + 4 + 4 * 3 * 9 + 4
    assert m.proj.weight.dtype == m.proj.bias.dtype == m.conv.weight.dtype == torch.bfloat16
    assert m.embed.weight.dtype == torch.float32 and m.head.weight is m.embed.weight
    assert m.norm.weight.dtype == m.scale.dtype == torch.float32
    assert not m.proj.weight.requires_grad
