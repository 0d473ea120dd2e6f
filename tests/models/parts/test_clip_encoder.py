"""CLIPPatchEncoder (docs/hisem.md): ViT-B/16 counts, fine-tuning pattern, token count/order, post-LN, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import CLIPVisionConfig, CLIPVisionModel

from changecap.errors import ConfigError, ModelError
from changecap.models.parts.clip_encoder import VIT_B16_CONFIG, CLIPPatchEncoder

TINY = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "image_size": 32,
    "patch_size": 8,
}


def _trainable(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters() if p.requires_grad)


def test_vit_b16_counts_and_paper_trainable_part() -> None:
    with torch.device("meta"):
        enc = CLIPPatchEncoder(CLIPVisionModel(CLIPVisionConfig(**VIT_B16_CONFIG)), trainable_layers=4)
    total = sum(p.numel() for p in enc.parameters())
    # the official count holds OpenAI's visual tower incl. the 768→512 `proj`, which patch tokens never use
    assert total == 85_799_424 and total + 768 * 512 == 86_192_640
    assert _trainable(enc) == 28_353_024 == 4 * 7_087_872 + 1_536
    assert enc.grid_size == 14 and enc.image_size == 224 and enc.hidden_size == 768


@pytest.mark.parametrize(("k", "layers"), [(0, []), (1, [2]), (2, [1, 2]), (5, [0, 1, 2]), (-1, [0, 1, 2])])
def test_freezing_pattern(k: int, layers: list[int]) -> None:
    enc = CLIPPatchEncoder.from_config(TINY, trainable_layers=k)
    for name, p in enc.named_parameters():
        if name.startswith("vision.encoder.layers."):
            expected = int(name.split(".")[3]) in layers
        elif name.startswith("vision.post_layernorm."):
            expected = k != 0
        else:  # patch/position embeddings, class embedding, pre-LN
            expected = k == -1
        assert p.requires_grad == expected, name


@pytest.mark.parametrize("k", [-2, True])
def test_invalid_trainable_layers(k: int) -> None:
    with pytest.raises(ConfigError, match="model.encoder.trainable_layers"):
        CLIPPatchEncoder.from_config(TINY, trainable_layers=k)


def test_tokens_are_last_layer_patches_with_post_layernorm() -> None:
    enc = CLIPPatchEncoder.from_config(TINY).eval()
    images = torch.randn(2, 3, 32, 32)
    tokens = enc(images)
    assert tokens.shape == (2, 16, 32)  # (32 / 8)² patches, CLS dropped
    hidden = enc.vision(pixel_values=images).last_hidden_state  # [B, 1 + 16, 32]
    torch.testing.assert_close(tokens, enc.vision.post_layernorm(hidden[:, 1:]))
    enc.patch_ln_post = False
    torch.testing.assert_close(enc(images), hidden[:, 1:])


def test_token_order_is_row_major() -> None:
    enc = CLIPPatchEncoder.from_config({**TINY, "num_hidden_layers": 1}).eval()
    with torch.no_grad():  # make the block the identity so each token depends on its own patch only
        layer = enc.vision.encoder.layers[0]
        for lin in (layer.self_attn.out_proj, layer.mlp.fc2):
            lin.weight.zero_()
            lin.bias.zero_()
    images = torch.randn(1, 3, 32, 32)
    changed = images.clone()
    row, col = 1, 2
    changed[:, :, row * 8 : (row + 1) * 8, col * 8 : (col + 1) * 8] += 1.0
    diff = (enc(changed) - enc(images)).abs().sum(-1)[0]  # [16]
    assert diff.nonzero().flatten().tolist() == [row * 4 + col]  # token t = row · grid + col


def test_gradients_only_reach_trainable_layers() -> None:
    enc = CLIPPatchEncoder.from_config(TINY, trainable_layers=1).train()
    enc(torch.randn(2, 3, 32, 32)).square().mean().backward()
    for name, p in enc.named_parameters():
        assert (p.grad is not None) == p.requires_grad, name


def test_bf16_autocast() -> None:
    enc = CLIPPatchEncoder.from_config(TINY).eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = enc(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 16, 32) and torch.isfinite(out.float()).all()


def test_wrong_image_size() -> None:
    enc = CLIPPatchEncoder.from_config(TINY)
    with pytest.raises(ModelError, match=r"\[B, 3, 32, 32\]"):
        enc(torch.randn(1, 3, 64, 64))


def test_config_fields_round_trip() -> None:
    enc = CLIPPatchEncoder.from_config(TINY)
    again = CLIPPatchEncoder.from_config(enc.config_fields)
    assert again.config_fields == enc.config_fields
    assert enc.config_fields["hidden_act"] == "quick_gelu"  # OpenAI CLIP's activation is the default


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({**TINY, "hidden_sise": 32}, "model.encoder.config.hidden_sise"),
        ({**TINY, "num_attention_heads": 5}, "model.encoder.config.num_attention_heads"),
        ({**TINY, "patch_size": 7}, "model.encoder.config.patch_size"),
        ({**TINY, "image_size": "32"}, "model.encoder.config.image_size"),
    ],
)
def test_config_errors(fields: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        CLIPPatchEncoder.from_config(fields)


def test_from_pretrained_local_directory(tmp_path: Path) -> None:
    src = CLIPPatchEncoder.from_config(TINY)
    src.vision.save_pretrained(tmp_path / "clip")
    enc = CLIPPatchEncoder.from_pretrained(tmp_path / "clip", trainable_layers=2)
    images = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(enc.eval()(images), src.eval()(images))
    assert enc.trainable_layers == 2


def test_from_pretrained_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        CLIPPatchEncoder.from_pretrained(tmp_path / "missing")
    with pytest.raises(ModelError, match="cannot load CLIP vision weights from local directory") as info:
        CLIPPatchEncoder.from_pretrained(tmp_path)  # a directory without weights
    assert "\n" not in str(info.value)


def test_uninitialised_build_matches_after_loading_weights() -> None:
    src = CLIPPatchEncoder.from_config(TINY, trainable_layers=1).eval()
    fast = CLIPPatchEncoder.from_config(TINY, trainable_layers=1, init_weights=False).eval()
    assert set(fast.state_dict()) == set(src.state_dict())
    fast.load_state_dict(src.state_dict())
    assert fast.vision.embeddings.position_ids.tolist() == [list(range(17))]  # not in any checkpoint: rebuilt
    assert [p.requires_grad for p in fast.parameters()] == [p.requires_grad for p in src.parameters()]
    images = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(fast(images), src(images))


def test_quick_gelu_is_bit_identical_to_transformers_with_and_without_gradients() -> None:
    from transformers.activations import QuickGELUActivation

    from changecap.models.parts.clip_encoder import QuickGELU

    x = torch.randn(3, 5, 64, generator=torch.Generator().manual_seed(0))
    for t in (x, x.bfloat16()):
        assert torch.equal(QuickGELU()(t), QuickGELUActivation()(t))  # the in-place path (no gradient needed)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    QuickGELU()(a).pow(2).sum().backward()
    QuickGELUActivation()(b).pow(2).sum().backward()
    assert a.grad is not None and torch.equal(a.grad, b.grad)


def test_the_encoder_uses_the_in_place_quick_gelu_and_computes_what_transformers_does() -> None:
    from changecap.models.parts.clip_encoder import QuickGELU

    torch.manual_seed(0)
    enc = CLIPPatchEncoder.from_config({**TINY, "hidden_act": "quick_gelu"}, trainable_layers=1).eval()
    assert sum(isinstance(m, QuickGELU) for m in enc.modules()) == 3  # one per block
    plain = CLIPVisionModel(enc.vision.config).eval()  # transformers' own activation
    plain.load_state_dict(enc.vision.state_dict())
    images = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        hidden = plain(pixel_values=images).last_hidden_state  # [B, 1 + 16, 32]
        assert torch.equal(enc(images), plain.post_layernorm(hidden[:, 1:]))
    enc.train()
    enc(images).sum().backward()  # frozen blocks in place, the trained block through autograd
    assert enc.vision.encoder.layers[-1].mlp.fc1.weight.grad is not None


def test_gradient_checkpointing_gives_the_same_gradients_and_replays_only_the_trainable_blocks() -> None:
    torch.manual_seed(0)
    plain = CLIPPatchEncoder.from_config({**TINY, "hidden_act": "quick_gelu"}, trainable_layers=2).train()
    ckpt = CLIPPatchEncoder.from_config({**TINY, "hidden_act": "quick_gelu"}, trainable_layers=2).train()
    ckpt.load_state_dict(plain.state_dict())
    ckpt.set_gradient_checkpointing(True)
    assert ckpt.gradient_checkpointing and not plain.gradient_checkpointing
    calls = [0] * TINY["num_hidden_layers"]
    for i, layer in enumerate(ckpt.vision.encoder.layers):
        # a pre-hook: the replay stops early once the last saved tensor is recomputed, before fc2's forward hooks run
        layer.mlp.fc1.register_forward_pre_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
    images = torch.randn(2, 3, 32, 32)
    plain(images).square().mean().backward()
    ckpt(images).square().mean().backward()
    assert calls == [1, 2, 2]  # the frozen block runs once; the two trained blocks are replayed in backward
    grads = {n: p.grad for n, p in plain.named_parameters() if p.requires_grad}
    assert grads
    for name, p in ckpt.named_parameters():
        assert (p.grad is None) == (name not in grads), name
        if name in grads:
            torch.testing.assert_close(p.grad, grads[name], rtol=0, atol=0)  # the replay computes the same values
    with torch.inference_mode():
        calls[:] = [0, 0, 0]
        ckpt.eval()(images)
    assert calls == [1, 1, 1]


def test_gradient_checkpointing_is_a_config_field_that_round_trips() -> None:
    from changecap.models.parts.clip_encoder import EncoderConfig, build_clip_encoder

    cfg = EncoderConfig(config=dict(TINY), trainable_layers=1, gradient_checkpointing=True)
    assert EncoderConfig.from_dict(cfg.to_dict()) == cfg
    assert EncoderConfig.from_dict({"config": dict(TINY)}).gradient_checkpointing is False  # older configs
    encoder, _ = build_clip_encoder(cfg)
    assert encoder.gradient_checkpointing
    with pytest.raises(ConfigError, match="model.encoder.gradient_checkpointing"):
        EncoderConfig.from_dict({"config": dict(TINY), "gradient_checkpointing": "yes"})


def _pair_of_encoders(trainable_layers: int = 1) -> tuple[CLIPPatchEncoder, CLIPPatchEncoder]:
    torch.manual_seed(0)
    plain = CLIPPatchEncoder.from_config({**TINY, "hidden_act": "quick_gelu"}, trainable_layers).train()
    cached = CLIPPatchEncoder.from_config({**TINY, "hidden_act": "quick_gelu"}, trainable_layers).train()
    cached.load_state_dict(plain.state_dict())
    return plain, cached


def test_frozen_prefix_cache_gives_the_same_outputs_and_gradients_on_misses_and_hits() -> None:
    plain, cached = _pair_of_encoders(trainable_layers=1)  # blocks 0 and 1 frozen, block 2 trained
    cache = cached.enable_prefix_cache(10**8)
    assert cached.frozen_blocks == 2
    images = torch.randn(4, 3, 32, 32)
    images[3] = images[1]  # a repeated image within the batch
    # first call: all four lookups miss (the repeat too: every lookup precedes the computation); second: all hit
    for _ in range(2):
        plain.zero_grad()
        cached.zero_grad()
        a, b = plain(images), cached(images)
        assert torch.equal(a, b)
        a.square().sum().backward()
        b.square().sum().backward()
        for (name, p), q in zip(plain.named_parameters(), cached.parameters(), strict=True):
            assert (p.grad is None) == (q.grad is None), name
            if p.grad is not None:
                assert torch.equal(p.grad, q.grad), name
    assert len(cache) == 3 and cache.hits == 4 and cache.misses == 4
    assert cache.bytes == 3 * 17 * 32 * 4  # three distinct images of [1 + 16, 32] fp32


def test_frozen_prefix_cache_keys_evicts_and_invalidates() -> None:
    from changecap.models.parts.clip_encoder import FrozenPrefixCache

    image = torch.randn(3, 32, 32)
    assert FrozenPrefixCache.key(image, None) == FrozenPrefixCache.key(image.clone(), None)
    assert FrozenPrefixCache.key(image, None) != FrozenPrefixCache.key(image, torch.bfloat16)  # autocast differs
    changed = image.clone()
    changed[0, 0, 0] += 1e-3
    assert FrozenPrefixCache.key(image, None) != FrozenPrefixCache.key(changed, None)

    cache = FrozenPrefixCache(max_bytes=2 * 17 * 32 * 4)  # room for two entries
    rows = [torch.randn(17, 32) for _ in range(3)]
    for i, row in enumerate(rows):
        cache.put(bytes([i]), row)
    assert len(cache) == 2 and cache.get(bytes([0])) is None  # the least recently used went first
    assert torch.equal(cache.get(bytes([2])), rows[2])

    _, encoder = _pair_of_encoders(trainable_layers=1)
    cache = encoder.enable_prefix_cache(10**8)
    encoder(torch.randn(2, 3, 32, 32))
    assert len(cache) == 2
    encoder.load_state_dict(encoder.state_dict())  # new weights: stale entries go
    assert len(cache) == 0
    encoder(torch.randn(2, 3, 32, 32))
    encoder.set_trainable_layers(2)  # a different frozen prefix
    assert len(cache) == 0
    encoder.vision.encoder.layers[0].mlp.fc1.weight.requires_grad_(True)  # unfrozen by hand
    with pytest.raises(ModelError, match="requires gradients"):
        encoder(torch.randn(2, 3, 32, 32))


def test_frozen_prefix_cache_refuses_encoders_without_a_deterministic_frozen_prefix() -> None:
    with pytest.raises(ModelError, match="no frozen blocks"):
        CLIPPatchEncoder.from_config(TINY, trainable_layers=-1).enable_prefix_cache(10**8)
    with pytest.raises(ModelError, match="attention_dropout"):
        CLIPPatchEncoder.from_config({**TINY, "attention_dropout": 0.1}, trainable_layers=1).enable_prefix_cache(10**8)


def test_frozen_prefix_cache_entries_filled_in_inference_mode_serve_training() -> None:
    plain, cached = _pair_of_encoders(trainable_layers=1)
    cached.enable_prefix_cache(10**8)
    images = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():  # validation fills the cache
        cached.eval()(images)
    cached.train()
    a, b = plain(images), cached(images)
    a.sum().backward()
    b.sum().backward()  # an inference tensor in the graph would raise here
    assert cached.prefix_cache is not None and cached.prefix_cache.hits == 2
    assert torch.equal(a, b)
