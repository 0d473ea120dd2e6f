"""HiSem composition: the model contract (encode / forward / forward_features / generate / caption), no-backbone use,
router probabilities, aux loss pass-through, gradients and bf16 autocast, on tiny random models."""

from __future__ import annotations

import pytest
import torch

from changecap.data.vocab import END_ID, START_ID
from changecap.errors import ModelError
from changecap.models import build_model
from changecap.models.hisem import HiSem, HiSemFusion, tiny_config
from changecap.models.hisem.output import CaptionModelOutput
from changecap.models.parts.decoding import word_attention

V, B, S, T = 23, 3, 32, 9


def _model(encoder: bool = True, seed: int = 0) -> HiSem:
    torch.manual_seed(seed)
    return build_model(tiny_config(V, image_size=S, patch_size=8, dim=32, max_length=12, encoder=encoder)).eval()


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(B, 2, 3, S, S, generator=g)
    tokens = torch.randint(4, V, (B, T), generator=g)
    tokens[:, 0] = START_ID
    tokens[0, 5], tokens[0, 6:] = END_ID, 0
    return image, tokens


def test_contract_shapes() -> None:
    model = _model()
    assert isinstance(model.fusion, HiSemFusion)
    image, tokens = _batch()
    out = model(image, tokens)
    assert isinstance(out, CaptionModelOutput)
    assert out.logits.shape == (B, T, V)
    assert out.router_logits is not None and out.router_logits.shape == (B, 2)
    assert out.aux_loss.dim() == 0 and float(out.aux_loss) == 0.0  # eval mode: no balance loss


def test_encode_uses_one_encoder_for_both_dates() -> None:
    model = _model()
    image, _ = _batch()
    f1, f2 = model.encode(image)
    assert f1.shape == f2.shape == (B, 16, 32)
    torch.testing.assert_close(f1, model.encoder(image[:, 0]))
    torch.testing.assert_close(f2, model.encoder(image[:, 1]))
    with pytest.raises(ModelError, match=r"\[B, 2, 3, H, W\]"):
        model.encode(image[:, 0])


def test_forward_equals_forward_features_and_manual_composition() -> None:
    model = _model()
    image, tokens = _batch()
    route = torch.tensor([1, 0, 1])
    out = model(image, tokens, route=route)
    f1, f2 = model.encode(image)
    feat = model.forward_features(f1, f2, tokens, route=route)
    torch.testing.assert_close(out.logits, feat.logits)
    memory, router = model.fusion(f1, f2, route=route)
    torch.testing.assert_close(out.logits, model.decoder(memory, tokens))
    assert out.router_logits is not None
    torch.testing.assert_close(out.router_logits, router)


def test_aux_loss_is_the_fusions_in_training() -> None:
    model = _model().train()
    image, tokens = _batch()
    out = model(image, tokens, route=torch.tensor([1, 1, 0]))
    assert out.aux_loss is model.fusion.aux_loss
    assert float(out.aux_loss.detach()) > 0  # changed samples went through the MoE


def test_gradients_flow_to_trainable_parts_only() -> None:
    model = _model().train()
    image, tokens = _batch()
    out = model(image, tokens, route=torch.tensor([1, 0, 1]))
    assert out.router_logits is not None
    loss = out.logits.logsumexp(-1).mean() + out.router_logits.square().mean() + out.aux_loss
    loss.backward()
    enc_grads = {n: p.grad is not None for n, p in model.encoder.named_parameters()}
    assert all(has == model.encoder.get_parameter(n).requires_grad for n, has in enc_grads.items())
    assert any(enc_grads.values()) and not all(enc_grads.values())
    assert all(p.grad is not None for p in model.decoder.parameters())


def test_generate_and_caption() -> None:
    model = _model()
    image, _ = _batch()
    seqs, prob = model.caption(image, max_length=8)
    assert len(seqs) == B and all(s[0] == START_ID and len(s) <= 9 for s in seqs)
    f1, f2 = model.encode(image)
    memory, router = model.fusion(f1, f2)
    assert seqs == model.generate(memory, max_length=8)
    assert router is not None and prob is not None and prob.shape == (B,)
    torch.testing.assert_close(prob, router.softmax(-1)[:, 1])
    beams, _ = model.caption(image, max_length=8, beam_size=3)
    assert len(beams) == B and all(s[0] == START_ID for s in beams)
    default, _ = model.caption(image)  # max_length defaults to the decoder's table size
    assert all(len(s) <= 13 for s in default)


def test_model_without_backbone_runs_from_tokens() -> None:
    model = _model(encoder=False)
    assert model.encoder is None
    image, tokens = _batch()
    with pytest.raises(ModelError, match="no image encoder"):
        model.encode(image)
    with pytest.raises(ModelError, match="no image encoder"):
        model.caption(image)
    f1, f2 = torch.randn(B, 16, 32), torch.randn(B, 16, 32)
    assert model.forward_features(f1, f2, tokens).logits.shape == (B, T, V)
    seqs, prob = model.caption_features(f1, f2, max_length=6)
    assert len(seqs) == B and prob is not None


def test_same_weights_give_same_captions_from_image_or_tokens() -> None:
    full, headless = _model(), _model(encoder=False)
    headless.fusion.load_state_dict(full.fusion.state_dict())
    headless.decoder.load_state_dict(full.decoder.state_dict())
    image, _ = _batch()
    f1, f2 = full.encode(image)
    assert full.caption(image, max_length=8)[0] == headless.caption_features(f1, f2, max_length=8)[0]


def test_bf16_autocast_cpu() -> None:
    model = _model()
    image, tokens = _batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(image, tokens)
        seqs, prob = model.caption(image, max_length=6, beam_size=2)
    assert torch.isfinite(out.logits.float()).all() and len(seqs) == B
    assert prob is not None and torch.isfinite(prob).all()


def test_parameter_counts_add_up() -> None:
    model = _model()
    counts = model.parameter_counts()
    assert counts["total"] == counts["encoder"] + counts["fusion"] + counts["decoder"]
    assert 0 < counts["trainable"] < counts["total"]  # part of the CLIP tower is frozen


@pytest.mark.parametrize("architecture", ["hisem", "plain"])
def test_predict_gives_attention_over_the_fused_grid_per_word(architecture: str) -> None:
    from changecap.data.vocab import Vocabulary

    torch.manual_seed(0)
    model = build_model(tiny_config(V, image_size=S, patch_size=8, dim=32, max_length=12,
                                    architecture=architecture)).eval()  # fmt: skip
    model.vocab = Vocabulary.build([[f"w{i}" for i in range(V - 4)]], threshold=0)
    image, _ = _batch()
    out = model.predict(image, attention_maps=True)
    plain = model.predict(image)
    assert plain.attention_maps is None and out.tokens == plain.tokens  # asking for the maps changes no caption
    cells = (S // 8) ** 2  # the 4 × 4 patch grid the fusion keeps
    for text, maps in zip(out.texts, out.attention_maps, strict=True):
        assert maps.shape == (len(text.split()), cells) and maps.dtype == torch.float32
        torch.testing.assert_close(maps.sum(-1), torch.ones(len(maps)))
    memory, _ = model.fusion(*model.encode(image))
    torch.testing.assert_close(out.attention_maps[0], word_attention(model.decoder, memory, out.tokens)[0])
