"""Transformer caption decoder (docs/hisem.md): counts, official layout, masks, KV cache, limits, autocast."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from changecap.errors import ConfigError, ModelError
from changecap.models.parts.attention import MultiheadAttention
from changecap.models.parts.caption_decoder import (
    OFFICIAL_NAME_MAP,
    CaptionDecoderConfig,
    TransformerCaptionDecoder,
    sinusoidal_table,
)

D, V, H, L = 32, 17, 4, 9


def _decoder(layers: int = 2, max_length: int = 12, seed: int = 0, **kw: object) -> TransformerCaptionDecoder:
    torch.manual_seed(seed)
    cfg = CaptionDecoderConfig(dim=D, vocab_size=V, max_length=max_length, layers=layers, heads=H, **kw)  # type: ignore[arg-type]
    return TransformerCaptionDecoder(cfg).eval()


def _tokens() -> torch.Tensor:
    return torch.tensor(
        [
            [2, 5, 6, 7, 3, 0, 0, 0],  # <START> w w w <END> <NULL>…
            [2, 9, 3, 0, 0, 0, 0, 0],
            [2, 4, 4, 8, 9, 10, 11, 3],
        ]
    )


# ------------------------------------------------------------------------------------------------ structure
@pytest.mark.parametrize(("unused", "expected"), [(True, 13_802_997), (False, 10_221_813)])
def test_paper_parameter_count(unused: bool, expected: int) -> None:
    with torch.device("meta"):
        dec = TransformerCaptionDecoder(CaptionDecoderConfig(768, 501, official_unused_params=unused))
    assert sum(p.numel() for p in dec.parameters()) == expected
    sd = dec.state_dict()
    assert sd["position_encoding.pe"].shape == (41, 1, 768)
    assert sd["layers.0.self_attn.in_proj_weight"].shape == (2304, 768)
    assert len(sd) == (29 if unused else 22)  # official decoder_dict has 29 entries


def test_official_name_map_covers_state_dict() -> None:
    dec = _decoder(layers=2, official_unused_params=True)
    patterns = {k.replace("{i}", str(i)) for k in OFFICIAL_NAME_MAP for i in range(2)}
    assert set(dec.state_dict()) <= patterns
    assert {k for k in patterns if "fc_alpha" not in k and "embedding_1D" not in k} <= set(_decoder().state_dict())


def test_initialisation_follows_the_official_code() -> None:
    dec = _decoder()
    for w in (dec.word_embedding.weight, dec.output_proj.weight):
        assert w.abs().max() <= 0.1 and w.std() > 0.03  # U(-0.1, 0.1)
    assert torch.count_nonzero(dec.output_proj.bias) == 0
    torch.testing.assert_close(dec.position_encoding.pe, sinusoidal_table(12, D))
    pe = sinusoidal_table(5, 4)[:, 0]  # [T, D]; channel pair i uses frequency 10000^(-2i/D)
    angle = torch.tensor([3.0, 3.0 / 100.0])
    torch.testing.assert_close(pe[3], torch.stack([angle[0].sin(), angle[0].cos(), angle[1].sin(), angle[1].cos()]))


def test_attention_matches_nn_multihead_attention() -> None:
    torch.manual_seed(0)
    ours = MultiheadAttention(D, H).eval()
    ref = nn.MultiheadAttention(D, H, batch_first=True).eval()
    ref.load_state_dict(ours.state_dict())  # identical parameter names and shapes
    q, kv = torch.randn(2, 5, D), torch.randn(2, 7, D)
    torch.testing.assert_close(ours(q, kv), ref(q, kv, kv, need_weights=False)[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours(q, q), ref(q, q, q, need_weights=False)[0], atol=1e-5, rtol=1e-5)


def test_forward_matches_official_formulation() -> None:
    """Reference built from nn.TransformerDecoderLayer (what the official code uses) plus the outer residual."""
    dec = _decoder(layers=2)
    refs = nn.ModuleList(
        nn.TransformerDecoderLayer(D, H, 4 * D, dropout=0.0)
        for _ in range(2)  # sequence-first, post-norm, ReLU
    ).eval()
    for ref, ours in zip(refs, dec.layers):
        sd = {k.replace("cross_attn", "multihead_attn"): v for k, v in ours.state_dict().items()}
        ref.load_state_dict(sd)
    tokens, memory = _tokens(), torch.randn(3, L, D)
    t = tokens.shape[1]
    x = dec.word_embedding(tokens).transpose(0, 1) + dec.position_encoding.pe[:t]  # [T, B, D]
    causal = torch.ones(t, t, dtype=torch.bool).triu(diagonal=1)  # True = masked (the official float mask's -inf)
    pad = (tokens == 0) | (tokens == 3)
    for ref in refs:
        x = ref(x, memory.transpose(0, 1), tgt_mask=causal, tgt_key_padding_mask=pad) + x
    expected = dec.output_proj(x).transpose(0, 1)  # [B, T, V]
    got = dec(memory, tokens)
    assert got.shape == (3, t, V)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------------ masks
def test_training_mask_hides_null_and_end_keys() -> None:
    dec = _decoder()
    tokens, memory = _tokens(), torch.randn(3, L, D)
    default = dec(memory, tokens)
    explicit = dec(memory, tokens, key_padding_mask=(tokens == 0) | (tokens == 3))
    torch.testing.assert_close(default, explicit)
    null_only = dec(memory, tokens, key_padding_mask=tokens == 0)
    end = 4  # <END> of row 0: scored positions 0..3 never see it, later (unscored) ones do under the NULL-only mask
    torch.testing.assert_close(default[0, :end], null_only[0, :end])
    assert not torch.allclose(default[0, end + 1 :], null_only[0, end + 1 :])
    # changing what follows a position never changes its logits (causal)
    other = tokens.clone()
    other[2, 5:] = 12
    torch.testing.assert_close(dec(memory, other)[2, :5], default[2, :5])


def test_all_padding_row_stays_finite() -> None:
    dec = _decoder()
    tokens = torch.zeros(2, 6, dtype=torch.long)
    tokens[1] = torch.tensor([2, 5, 3, 0, 0, 0])
    out = dec(torch.randn(2, L, D), tokens)
    assert torch.isfinite(out).all()


# ------------------------------------------------------------------------------------------------ cache
@pytest.mark.parametrize("group", [1, 3])
def test_cached_steps_equal_teacher_forcing(group: int) -> None:
    dec = _decoder(layers=2)
    items = 2
    memory = torch.randn(items, L, D)
    tokens = torch.randint(4, V, (items * group, 7))
    tokens[:, 0] = 2
    tokens[0, 3] = 0  # a generated <NULL> must be masked as a key, as in the official inference mask
    full = dec(memory.repeat_interleave(group, 0), tokens, key_padding_mask=tokens == 0)  # [N, T, V]
    cache = dec.init_cache(memory, group)
    assert cache.items == items and cache.length == 0
    for t in range(tokens.shape[1]):
        step = dec.step(tokens[:, t], cache)  # [N, V]
        torch.testing.assert_close(step, full[:, t], atol=2e-5, rtol=1e-5)
    assert cache.length == tokens.shape[1]
    assert cache.self_keys[0].shape == (items * group, H, 7, D // H)
    assert cache.cross_keys[0].shape == (items, H, L, D // H)  # memory projected once per item, not per beam


def test_cache_reorder_and_keep_items() -> None:
    dec = _decoder()
    memory = torch.randn(3, L, D)
    tokens = torch.randint(4, V, (6, 3))
    cache = dec.init_cache(memory, group=2)
    for t in range(2):
        dec.step(tokens[:, t], cache)
    cache.keep_items(torch.tensor([2, 0]))  # items 2 and 0 → hypotheses 4, 5, 0, 1
    cache.reorder(torch.tensor([1, 1, 2, 3]))
    got = dec.step(tokens[[5, 5, 0, 1], 2], cache)
    ref_tokens = tokens[[5, 5, 0, 1]]
    ref = dec(memory[[2, 2, 0, 0]], ref_tokens, key_padding_mask=ref_tokens == 0)[:, 2]
    torch.testing.assert_close(got, ref, atol=2e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------------ limits, errors
def test_positions_beyond_max_length_raise() -> None:
    dec = _decoder(max_length=4)
    memory = torch.randn(1, L, D)
    with pytest.raises(ModelError, match="max_length=4"):
        dec(memory, torch.full((1, 5), 4))
    cache = dec.init_cache(memory)
    for _ in range(4):
        dec.step(torch.tensor([4]), cache)
    with pytest.raises(ModelError, match="position 5"):
        dec.step(torch.tensor([4]), cache)
    with pytest.raises(ModelError, match=r"\[B, L, 32\]"):
        dec(torch.randn(1, L, D + 1), torch.full((1, 3), 4))


@pytest.mark.parametrize(
    ("d", "field"),
    [
        ({"dim": 32, "vocab_size": 10, "heads": 5}, "model.decoder.heads"),
        ({"dim": 32, "vocab_size": 10, "layer": 2}, "model.decoder.layer"),
        ({"dim": 32}, "model.decoder.vocab_size"),
        ({"dim": 32, "vocab_size": 10, "layers": True}, "model.decoder.layers"),
        ({"dim": 32, "vocab_size": 10, "dropout": 1.5}, "model.decoder.dropout"),
    ],
)
def test_config_errors_name_the_field(d: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")) as info:
        CaptionDecoderConfig.from_dict(d, prefix="model.decoder")
    assert "\n" not in str(info.value)


def test_config_round_trip() -> None:
    cfg = CaptionDecoderConfig(64, 100, max_length=20, layers=2, dropout=0.2, official_unused_params=True)
    assert CaptionDecoderConfig.from_dict(cfg.to_dict()) == cfg


# ------------------------------------------------------------------------------------------------ training, autocast
def test_gradients_reach_every_used_parameter() -> None:
    dec = _decoder(official_unused_params=True).train()
    memory = torch.randn(3, L, D, requires_grad=True)
    dec(memory, _tokens()).logsumexp(-1).mean().backward()
    for name, p in dec.named_parameters():
        unused = "fc_alpha" in name or "embedding_1D" in name
        assert (p.grad is None) == unused, name
    assert memory.grad is not None and memory.grad.abs().sum() > 0


def test_dropout_only_in_training() -> None:
    dec = _decoder()
    tokens, memory = _tokens(), torch.randn(3, L, D)
    torch.testing.assert_close(dec(memory, tokens), dec(memory, tokens))
    dec.train()
    assert not torch.allclose(dec(memory, tokens), dec(memory, tokens))


def test_bf16_autocast_forward_and_step() -> None:
    dec = _decoder()
    memory = torch.randn(2, L, D)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = dec(memory, _tokens()[:2])
        cache = dec.init_cache(memory)
        steps = [dec.step(torch.tensor([2, 2]), cache), dec.step(torch.tensor([5, 9]), cache)]
    assert out.dtype == torch.float32 and torch.isfinite(out).all()  # logits in fp32 (models/precision.py)
    assert all(s.shape == (2, V) and s.dtype == torch.float32 and torch.isfinite(s).all() for s in steps)
    torch.testing.assert_close(steps[1].float(), out[:, 1].float(), atol=0.1, rtol=0.05)


# ------------------------------------------------------------------------------------------------ cross-attention
def test_cross_attention_weights_are_those_the_layer_attends_with() -> None:
    """Weights [B, H, T, L] times the values, heads joined and projected, give the layer's own cross-attention."""
    dec = _decoder(layers=1)
    layer = dec.layers[0]
    tokens = _tokens()
    memory = torch.randn(3, L, D)
    x = dec.position_encoding(dec.word_embedding(tokens))  # [B, T, D]
    causal = torch.ones(8, 8, dtype=torch.bool).tril()
    allowed = causal & (tokens != 0)[:, None, None, :]  # [B, 1, T, T]
    weights = layer.cross_attention_weights(x, memory, allowed)  # [B, H, T, L]
    assert weights.shape == (3, H, 8, L) and weights.dtype == torch.float32
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, H, 8))
    h1 = layer.norm1(x + layer.self_attn(x, x, allowed))
    _, v = layer.cross_attn.project_kv(memory)  # [B, H, L, Dh]
    heads = (weights @ v).transpose(1, 2).reshape(3, 8, D)  # [B, T, D]
    torch.testing.assert_close(layer.cross_attn.out_proj(heads), layer.cross_attn(h1, memory), atol=2e-5, rtol=1e-5)


def test_cross_attention_of_a_position_reads_only_its_prefix() -> None:
    """Row t of the last layer's head-averaged map is what the decoder computes having read tokens 0..t: the same
    with the caption cut after t, whatever follows."""
    dec = _decoder(layers=2)
    memory = torch.randn(3, L, D)
    tokens = _tokens()
    full = dec.cross_attention(memory, tokens)  # [B, T, L]
    assert full.shape == (3, 8, L)
    torch.testing.assert_close(full.sum(-1), torch.ones(3, 8))
    for t in (0, 2, 5):
        cut = dec.cross_attention(memory, tokens[:, : t + 1])
        torch.testing.assert_close(cut[:, t], full[:, t], atol=1e-6, rtol=1e-5)
    changed = tokens.clone()
    changed[:, 4:] = 7
    torch.testing.assert_close(dec.cross_attention(memory, changed)[:, :4], full[:, :4], atol=1e-6, rtol=1e-5)
