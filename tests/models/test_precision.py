"""bf16 inference with the weights cast once: bit-identical to bf16 autocast for every architecture; only the
weights autocast would cast are cast; tied weights stay."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import nn

from changecap.data.vocab import Vocabulary
from changecap.models import build_model, config_from_dict
from changecap.models.contract import ChangeModel
from changecap.models.hisem import tiny_config
from changecap.models.precision import cast_matmul_weights
from tests.models.dfm.conftest import tiny as tiny_dfm
from tests.models.semantic_cc.conftest import tiny as tiny_scc

CD_TINY = {"architecture": "change_detection", "image_size": 64, "encoder": {"widths": [8, 16, 32], "blocks": 1},
           "decoder_dim": 8}  # fmt: skip


def _build(name: str) -> tuple[ChangeModel, int]:
    """A tiny model of ``name`` with a vocabulary of its decoder's size, and the side of the images it reads."""
    torch.manual_seed(0)
    if name in ("hisem", "plain"):
        model = build_model(tiny_config(20, image_size=32, patch_size=8, dim=32, architecture=name, max_length=12))
    elif name == "dfm":
        model = build_model(config_from_dict(tiny_dfm()))
    elif name == "semantic_cc":
        model = build_model(config_from_dict(tiny_scc()))
    else:
        model = build_model(config_from_dict(CD_TINY))
    words = [f"w{i}" for i in range(max(model.config.vocab_size - 4, 1))]  # 4 special tokens first
    model.vocab = Vocabulary.build([words], threshold=0)
    return model, model.image_size


def _outputs(model: ChangeModel, images: torch.Tensor) -> dict[str, Any]:
    """Every output ``predict`` gives (the model contract), None ones left out."""
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.predict(images, max_length=10 if model.capabilities.captions else None)
    fields = {"texts": out.texts, "tokens": out.tokens, "change_probability": out.change_probability,
              "mask_logits": out.mask_logits, "mask": out.mask}  # fmt: skip
    return {k: v for k, v in fields.items() if v is not None}


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
    assert expected.keys() == got.keys()
    for k in expected:
        if isinstance(expected[k], torch.Tensor):
            assert torch.equal(expected[k], got[k]), k
        else:
            assert expected[k] == got[k], k


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


def test_vocabulary_projections_compute_in_fp32_under_bf16_autocast() -> None:
    from changecap.models.precision import Fp32Linear, logits_in_fp32

    torch.manual_seed(0)
    head = Fp32Linear(16, 50)
    x = torch.randn(4, 16).to(torch.bfloat16)  # what a bf16 layer hands over
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = head(x)
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits, x.float() @ head.weight.T + head.bias, rtol=0, atol=0)
    plain = nn.Linear(16, 50)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert plain(x).dtype == torch.bfloat16  # what it replaces
    # an existing head converted in place: same parameters and keys, survives copies, skipped by the cast
    keys, weight = list(plain.state_dict()), plain.weight
    assert logits_in_fp32(plain) and isinstance(copy.deepcopy(plain), Fp32Linear)
    assert list(plain.state_dict()) == keys and plain.weight is weight
    assert cast_matmul_weights(plain) == 0 and plain.weight.dtype == torch.float32
    assert not logits_in_fp32(nn.Conv2d(3, 4, 1)) and not logits_in_fp32(None)


@pytest.mark.parametrize("name", ["hisem", "dfm", "semantic_cc"])
def test_every_captioner_keeps_its_vocabulary_projection_fp32(name: str) -> None:
    from changecap.models.precision import Fp32Linear

    model, _ = _build(name)
    heads = [m for m in model.modules() if isinstance(m, Fp32Linear)]
    assert len(heads) == 1
    cast_matmul_weights(model)
    assert heads[0].weight.dtype == torch.float32


def test_int8_linear_is_close_to_fp32_and_independent_of_the_other_rows() -> None:
    from changecap.models.precision import Int8Linear

    torch.manual_seed(0)
    linear = nn.Linear(64, 48)
    q = Int8Linear(linear)
    assert q.weight_int8.dtype == torch.int8 and q.weight_int8.shape == (48, 64)
    x = torch.randn(3, 5, 64) * torch.logspace(-2, 2, 5)[None, :, None]  # rows of very different magnitudes
    with torch.inference_mode():
        ref, got = linear(x), q(x)
        alone = q(x[1:2, 3:4])  # one row by itself
        empty = q(x[:0])
    assert got.shape == ref.shape == (3, 5, 48) and got.dtype == torch.float32
    # per-row scales: every row keeps its own relative accuracy, whatever its magnitude
    rel = (got - ref).norm(dim=-1) / ref.norm(dim=-1)
    assert rel.max() < 0.05
    assert torch.equal(alone[0, 0], got[1, 3])  # exact int32 sums: a row's result never depends on its batch
    assert empty.shape == (0, 5, 48)


@pytest.mark.parametrize("name", ["hisem", "plain", "dfm", "semantic_cc", "change_detection"])
def test_int8_runs_every_architecture_with_the_vocabulary_projection_float(name: str) -> None:
    from changecap.models.precision import Fp32Linear, Int8Linear, quantize_linear_layers

    model, size = _build(name)
    model.eval()
    q = copy.deepcopy(model)
    n = quantize_linear_layers(q)
    assert n == sum(isinstance(m, Int8Linear) for m in q.modules())
    assert n > 0 or name == "change_detection"  # the change detector is convolutional: nothing to quantise
    heads = [m for m in q.modules() if isinstance(m, Fp32Linear)]
    assert len(heads) == (0 if name == "change_detection" else 1)
    assert all(h.weight.dtype == torch.float32 for h in heads)
    # routers and gates read in fp32 on purpose stay nn.Linear
    assert all(type(m) is nn.Linear for k, m in q.named_modules() if k.endswith(("router", "moe.gate")))

    logits: dict[str, list[torch.Tensor]] = {"fp32": [], "int8": []}
    for key, m in (("fp32", model), ("int8", q)):
        for h in (x for x in m.modules() if isinstance(x, Fp32Linear)):
            h.register_forward_hook(lambda _m, _i, out, key=key: logits[key].append(out.detach().clone()))
    images = torch.randn(3, 2, 3, size, size, generator=torch.Generator().manual_seed(1))  # [B, 2, 3, S, S]
    max_length = 10 if model.capabilities.captions else None
    with torch.inference_mode():
        ref, got = model.predict(images, max_length=max_length), q.predict(images, max_length=max_length)
    if model.capabilities.change_mask:
        assert got.mask.shape == ref.mask.shape
        if n == 0:
            assert torch.equal(got.mask, ref.mask)
    if model.capabilities.captions:
        assert len(got.tokens) == len(ref.tokens) == 3
    if logits["fp32"]:
        # the first decoding step sees the same prompt in both: its logits must be nearly the same. A wrong scale
        # or a transposed weight gives unrelated logits (correlation near 0)
        a, b = logits["fp32"][0].flatten(), logits["int8"][0].flatten()
        assert torch.corrcoef(torch.stack([a, b]))[0, 1] > 0.99


def test_int8_leaves_tied_narrow_and_fused_path_layers_float() -> None:
    from changecap.models.precision import Int8Linear, keep_fp32, quantize_linear_layers

    class Mixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(40, 32)
            self.tied = nn.Linear(32, 40, bias=False)
            self.tied.weight = self.embed.weight
            self.proj = nn.Linear(32, 32)
            self.scorer = nn.Linear(32, 1)
            self.router = keep_fp32(nn.Linear(32, 32))
            self.torch_layer = nn.TransformerEncoderLayer(32, 4, 64, batch_first=True)

    m = Mixed()
    assert quantize_linear_layers(m) == 1
    assert isinstance(m.proj, Int8Linear)
    assert all(type(x) is nn.Linear for x in (m.tied, m.scorer, m.router, m.torch_layer.linear1))


def test_int8_weights_stay_in_the_range_the_cpu_sums_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    from changecap.models import precision

    assert precision.int8_weight_levels() in (63, 127)  # probed on this CPU
    torch.manual_seed(0)
    linear = nn.Linear(64, 32)
    monkeypatch.setattr(precision, "int8_weight_levels", lambda: 63)  # a CPU whose int8 kernel saturates (no VNNI)
    q = precision.Int8Linear(linear)
    assert int(q.weight_int8.abs().max()) == 63
    x = torch.randn(5, 64)
    with torch.inference_mode():
        rel = (q(x) - linear(x)).norm(dim=-1) / linear(x).norm(dim=-1)
    assert rel.max() < 0.05
