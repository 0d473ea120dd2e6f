"""The whole Semantic-CC model on a tiny random config: shapes, placements, trainable sets, batching, save/load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from changecap.data.vocab import Vocabulary
from changecap.errors import ConfigError, ModelError
from changecap.models import build_model, config_from_dict, load_model, save_model
from changecap.models.contract import Sampling
from changecap.models.semantic_cc import SemanticCC
from changecap.models.semantic_cc.caption import pool_token_grid
from tests.models.semantic_cc.conftest import WORDS, tiny

CAPTIONS = ["a house is built on the left.", "the scene is the same as before", "a road is built", "a house"]


def _model(seed: int = 0, **changes: object) -> SemanticCC:
    torch.manual_seed(seed)
    model = build_model(config_from_dict(tiny(**changes)))
    model.vocab = Vocabulary.build([WORDS], threshold=0)  # the data vocabulary its text captions are encoded in
    return model


def _images(b: int = 4, seed: int = 1) -> torch.Tensor:
    return torch.randn(b, 2, 3, 64, 64, generator=torch.Generator().manual_seed(seed))  # [B, 2, 3, S, S]


def test_shapes_of_every_stage() -> None:
    model = _model().eval()
    images = _images()
    raw, cd = model.encoder(images)
    assert raw.shape == (8, 16, 32) and cd.shape == (8, 16, 16)  # [2B, L, C], [2B, L, C_cd]: 4×4 grid
    f_cc, f_cd = model.neck(raw, cd)
    assert f_cc.shape == (8, 16, 24) and f_cd.shape == (8, 16, 16)
    assert model.change_logits(f_cd).shape == (4, 1, 64, 64)  # paper: one logit per pixel (BCE)
    visual = model.caption_decoder.visual_tokens(f_cc)
    assert visual.shape == (4, 4, 32)  # paper enhancer: [B, Q, D_llm]
    code = _model(**{"caption.enhancer": "code", "cd_decoder.loss": "ce", "cd_decoder.form": "code"}).eval()
    f_cc, f_cd = code.features(images)
    assert code.caption_decoder.visual_tokens(f_cc).shape == (4, 12, 32)  # code enhancer: 3Q tokens
    assert code.change_logits(f_cd).shape == (4, 2, 64, 64)
    out = model.predict(images)
    assert len(out.texts) == len(out.tokens) == 4 and all(isinstance(c, str) for c in out.texts)
    assert out.mask.shape == (4, 64, 64) and set(out.mask.unique().tolist()) <= {0, 1}
    assert out.mask_logits.shape == (4, 1, 64, 64) and out.change_probability is None


def test_every_decoding_option_reaches_the_llm() -> None:
    model = _model().eval()
    images = _images(2)
    dec = model.caption_decoder
    seen: list[dict] = []
    generate = dec.llm.generate
    dec.llm.generate = lambda **kw: seen.append(kw) or generate(**kw)  # type: ignore[method-assign]
    model.predict(images)  # the config's decoding: greedy, generation.max_new_tokens
    model.predict(images, beam_size=3, max_length=5, length_penalty=0.5)
    model.predict(images, sampling=Sampling(top_p=0.5, temperature=0.7, seed=3))
    assert (seen[0]["num_beams"], seen[0]["do_sample"], seen[0]["max_new_tokens"]) == (1, False, 6)
    assert (seen[1]["num_beams"], seen[1]["max_new_tokens"], seen[1]["length_penalty"]) == (3, 5, 0.5)
    assert (seen[2]["do_sample"], seen[2]["top_p"], seen[2]["temperature"]) == (True, 0.5, 0.7)
    short = model.predict(images, max_length=2).texts
    assert all(len(dec.tokenizer.encode(t)) <= 2 for t in short)  # at most 2 new LLM tokens
    a = model.predict(images, sampling=Sampling(seed=7)).texts
    assert a == model.predict(images, sampling=Sampling(seed=7)).texts  # seeded: the same draw
    with pytest.raises(ModelError, match="beam search .* or sampling"):
        model.predict(images, beam_size=2, sampling=Sampling())


def test_visual_pool_averages_the_cc_grid_before_the_qformer() -> None:
    tokens = torch.arange(16.0).view(1, 16, 1)  # [1, 4·4, 1]: row-major grid 0..15
    pooled = pool_token_grid(tokens, 2)  # [1, 2·2, 1]
    assert pooled.flatten().tolist() == [2.5, 4.5, 10.5, 12.5]  # e.g. (0 + 1 + 4 + 5) / 4
    assert pool_token_grid(tokens, 1) is tokens
    model = _model(**{"caption.visual_pool": 2}).eval()
    f_cc, _ = model.features(_images())  # [2B, 16, 24]
    dec = model.caption_decoder
    assert dec.visual_tokens(f_cc).shape == (4, 4, 32)  # still [B, Q, D_llm]
    pooled_then_read = dec.visual_tokens(f_cc)
    dec.config.visual_pool = 1  # the same decoder fed tokens pooled by hand
    assert torch.allclose(dec.visual_tokens(pool_token_grid(f_cc, 2)), pooled_then_read)
    assert not torch.allclose(dec.visual_tokens(f_cc), pooled_then_read)
    with pytest.raises(ConfigError, match="model.caption.visual_pool.*4×4 token grid"):
        config_from_dict(tiny(**{"caption.visual_pool": 3}))


def test_a_random_init_trunk_starts_at_vit_scale_not_at_zero() -> None:
    # SamVisionConfig's own default (1e-10) would leave the image almost out of the features (a trap for from-scratch
    # runs); a config's explicit initializer_range still wins.
    qkv = _model().encoder.sam.layers[0].attn.qkv.weight
    assert 0.015 < float(qkv.std()) < 0.025
    patch = _model().encoder.sam.patch_embed.projection.weight
    assert 0.015 < float(patch.std()) < 0.025
    tiny_range = _model(**{"encoder.config.initializer_range": 1e-10}).encoder.sam.layers[0].attn.qkv.weight
    assert float(tiny_range.std()) < 1e-9
    raw, _ = _model().eval().encoder(_images())  # [2B, L, C]
    assert float(raw.std(dim=0).mean()) > 0.2  # features that depend on the image (0.54; with the 1e-10 init 0.07)


@pytest.mark.parametrize(("placement", "blocks"), [("global", ["1"]), ("windowed", ["0"]), ("none", [])])
def test_filter_placement(placement: str, blocks: list[str]) -> None:
    model = _model(**{"encoder.bcsf_placement": placement})
    assert sorted(model.encoder.bcsf) == blocks


def test_only_lora_and_the_new_modules_train_in_the_encoder_and_the_llm() -> None:
    model = _model()
    for name, p in model.encoder.sam.named_parameters():
        assert p.requires_grad == ("lora_" in name), name
    assert all(p.requires_grad for p in model.encoder.bcsf.parameters())  # paper: the filters are new and train
    for name, p in model.caption_decoder.llm.named_parameters():
        assert p.requires_grad == ("lora_" in name), name
    frozen = [model.caption_decoder.qformer, model.caption_decoder.ln_vision]
    assert not any(p.requires_grad for m in frozen for p in m.parameters())
    assert not model.caption_decoder.query_tokens.requires_grad
    assert all(p.requires_grad for p in model.neck.parameters()) and all(
        p.requires_grad for p in model.cd_decoder.parameters()
    )
    code = _model(
        **{"encoder.bcsf_trainable": False, "encoder.lora.bias": "lora_only", "caption.llm_lora.enabled": False}
    )
    assert not any(p.requires_grad for p in code.encoder.bcsf.parameters())
    biases = [n for n, p in code.encoder.sam.named_parameters() if p.requires_grad and "lora_" not in n]
    assert biases and all(n.endswith("qkv.base_layer.bias") for n in biases)  # lora_only: the adapted layers' biases
    assert not any(p.requires_grad for p in code.caption_decoder.llm.parameters())


def test_a_batch_of_four_equals_four_single_pairs() -> None:
    model = _model().eval()
    images = _images()
    with torch.no_grad():
        f_cc, logits = model(images)
        loss_sum, count = model.caption_loss_sum(f_cc, CAPTIONS, [0, 1, 2, 3])
        captions = model.predict(images).texts
        singles = [model(images[i : i + 1]) for i in range(4)]
        single_losses = [model.caption_loss_sum(singles[i][0], [CAPTIONS[i]], [i]) for i in range(4)]
        single_captions = [model.predict(images[i : i + 1]).texts[0] for i in range(4)]
    for i in range(4):
        assert torch.allclose(logits[i], singles[i][1][0], atol=1e-5)
    assert torch.allclose(loss_sum, sum(s for s, _ in single_losses), rtol=1e-4)
    assert int(count) == sum(int(n) for _, n in single_losses)
    assert captions == single_captions


def test_caption_loss_covers_the_caption_and_end_symbol_only() -> None:
    model = _model()
    f_cc, _ = model(_images(2))
    _, count = model.caption_loss_sum(f_cc, ["A house, built!", "a road"], [0, 0])
    assert int(count) == (3 + 1) + (2 + 1)  # cleaned words + "###"


def test_logits_only_at_target_positions_give_the_full_loss() -> None:
    model = _model().eval()
    decoder = model.caption_decoder
    f_cc, _ = model(_images(2))
    captions, instructions = ["a house is built on the left", "a road"], [0, 3]  # different prompt lengths
    assert decoder._keeps_logits  # LLaMA takes logits_to_keep
    kept = decoder.caption_loss_sum(f_cc, captions, instructions)
    decoder._keeps_logits = False  # every position through the LM head, then the same positions picked
    full_logits = decoder.caption_loss_sum(f_cc, captions, instructions)
    assert torch.allclose(kept[0], full_logits[0], rtol=1e-5) and int(kept[1]) == int(full_logits[1])
    calls: list[torch.Tensor] = []
    decoder.llm.lm_head.register_forward_hook(lambda m, i, o: calls.append(o))
    decoder._keeps_logits = True
    decoder.caption_loss_sum(f_cc, captions, instructions)
    assert calls[0].shape[1] < decoder._sequences(decoder.visual_tokens(f_cc), instructions, captions)[0][0].shape[0]


def test_save_and_load_reproduce_masks_and_captions(tmp_path: Path) -> None:
    model = _model().eval()
    vocab = Vocabulary.build([WORDS], threshold=0)
    model.config.vocab_size = len(vocab)
    out = save_model(model, None, vocab, tmp_path / "m")
    again = load_model(out)
    assert isinstance(again, SemanticCC) and again.config == model.config
    images = _images(2)
    a, b = model.predict(images), again.predict(images)
    assert torch.equal(a.mask, b.mask) and a.texts == b.texts and a.tokens == b.tokens


def test_neck_ln_eps_option_and_directories_without_it(tmp_path: Path) -> None:
    code = _model(**{"neck.ln_eps": 0.0}).eval()
    norms = [m for m in code.neck.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert norms and all(m.eps == 0.0 for m in norms)
    images = _images(2)
    assert torch.isfinite(code.change_logits(code.features(images)[1])).all()
    # a model directory whose config does not name the field is built with the default, 1e-6
    model = _model().eval()
    vocab = Vocabulary.build([WORDS], threshold=0)
    model.config.vocab_size = len(vocab)
    out = save_model(model, None, vocab, tmp_path / "m")
    payload = json.loads((out / "config.json").read_text())
    assert payload["model"]["neck"].pop("ln_eps") == 1e-6
    (out / "config.json").write_text(json.dumps(payload))
    again = load_model(out)
    assert all(m.eps == 1e-6 for m in again.neck.modules() if isinstance(m, torch.nn.LayerNorm))
    with torch.no_grad():
        f_cc, f_cd = model.features(images)
        f_cc2, f_cd2 = again.features(images)
    assert torch.equal(f_cc, f_cc2) and torch.equal(f_cd, f_cd2)
    with pytest.raises(ConfigError, match="model.neck.ln_eps"):
        config_from_dict(tiny(**{"neck.ln_eps": -1.0}))


def test_bad_configs_are_one_line_errors() -> None:
    with pytest.raises(ConfigError, match="encoder_hidden_size"):
        config_from_dict(tiny(**{"neck.cc_dim": 32}))
    with pytest.raises(ConfigError, match="model.encoder.config.hidden_size"):
        config_from_dict(tiny(**{"encoder.config.hidden_size": 0}))
    with pytest.raises(ConfigError, match="model.neck.units.*must be >= 1"):
        config_from_dict(tiny(**{"neck.units": 0}))
    with pytest.raises(ConfigError, match="model.caption.llm_lora.target_modules"):
        build_model(config_from_dict(tiny(**{"caption.llm_lora.target_modules": ["nope"]})))
    with pytest.raises(ModelError, match="model.caption.llm 'nobody/no-llm'"):
        d = tiny(**{"caption.llm": "nobody/no-llm"})
        d["caption"].pop("llm_config")
        build_model(config_from_dict(d))
    with pytest.raises(ModelError, match=r"image pairs \[B, 2, 3, 64, 64\]"):
        _model().features(torch.randn(1, 2, 3, 32, 32))


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    images = _images(2)
    grads = []
    for checkpointing in (False, True):
        model = _model(**{"encoder.gradient_checkpointing": checkpointing}).train()
        for m in model.modules():  # dropout off: the two passes must see the same computation
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        _, logits = model(images)
        logits.float().pow(2).mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.encoder.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-6), name
