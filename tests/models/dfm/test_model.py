"""DFM on a tiny random config: shapes, the frozen prior, TGCL's gradient path through [CLS], the reconstructed
options, batching and a save/load round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from changecap.data.vocab import Vocabulary
from changecap.errors import ConfigError, ModelError
from changecap.models import build_model, config_from_dict, load_model, save_model
from changecap.models.dfm import DFM, tgcl_loss
from tests.models.dfm.conftest import WORDS, tiny


def _model(seed: int = 0, **changes: object) -> DFM:
    torch.manual_seed(seed)
    model = build_model(config_from_dict(tiny(**changes)))
    model.vocab = Vocabulary.build([WORDS[:12]], threshold=0)  # the 16 ids its captions use
    return model


def _images(b: int = 4, seed: int = 1) -> torch.Tensor:
    return torch.randn(b, 2, 3, 32, 32, generator=torch.Generator().manual_seed(seed))  # [B, 2, 3, S, S]


def _tokens(b: int = 4) -> torch.Tensor:
    return torch.randint(4, 16, (b, 7), generator=torch.Generator().manual_seed(2))  # [B, T]


def test_shapes_of_every_part() -> None:
    model = _model().eval()
    images = _images()
    e1, e2, c1, c2 = model.encode(images)
    assert e1.shape == e2.shape == (4, 16, 32) and c1.shape == c2.shape == (4, 32)  # 4×4 grid, width 32
    assert model.temporal(e1, e2).shape == (4, 16, 32)
    assert model.prior is not None and model.prior(images).shape == (4, 16, 32)  # resized to the ViT grid
    memory, visual = model.memory(images)
    assert memory.shape == (4, 16, 32) and torch.allclose(visual, c2 - c1)
    out = model(images, _tokens())
    assert out.logits.shape == (4, 7, 16) and out.visual.shape == (4, 32)
    assert model.text_embedding(torch.randn(4, 16)).shape == (4, 32)
    out = model.predict(images)
    assert len(out.tokens) == len(out.texts) == 4 and out.change_probability is None and out.mask is None
    assert model.predict(images, beam_size=2).tokens is not None  # beam search is declared


def test_the_prior_is_frozen_and_stays_in_eval_mode() -> None:
    model = _model().train()
    assert model.prior is not None
    detector = model.prior.detector
    assert not detector.training and not any(p.requires_grad for p in detector.parameters())
    groups = model.parameter_groups()
    frozen = {id(p) for p in detector.parameters()}
    assert not any(id(p) in frozen for params in groups.values() for p in params)
    assert {"prior", "contrastive", "encoder", "temporal", "jfm", "decoder"} == set(groups)
    before = {k: v.clone() for k, v in detector.state_dict().items()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    out = model(_images(), _tokens())
    out.logits.sum().backward()
    opt.step()
    assert all(torch.equal(before[k], v) for k, v in detector.state_dict().items())  # BN statistics included


def test_tgcl_gradients_reach_the_trainable_encoder_blocks_through_cls() -> None:
    model = _model()
    sentences = torch.randn(4, 16)
    _, visual = model.memory(_images())
    loss = tgcl_loss(visual, model.text_embedding(sentences), torch.tensor([True, True, False, True]),
                     model.logit_scale)  # fmt: skip
    loss.backward()
    layers = model.encoder.vision.encoder.layers
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in layers[-1].parameters())  # trainable block
    assert all(p.grad is None for p in layers[0].parameters())  # frozen (trainable_layers: 1)
    assert model.encoder.vision.post_layernorm.weight.grad.abs().sum() > 0
    assert model.logit_scale.grad is not None and model.text_proj.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "changes",
    [{"jfm.bsa": "cross"}, {"jfm.weights": "free"}, {"jfm.difference": "absolute"}, {"prior.enabled": False},
     {"prior.level": 0}, {"temporal.layers": 0}],
)  # fmt: skip
def test_reconstructed_options_build_and_run(changes: dict) -> None:
    model = _model(**changes).eval()
    out = model(_images(2), _tokens(2))
    assert out.logits.shape == (2, 7, 16)
    if changes.get("prior.enabled") is False:
        assert model.prior is None and model.jfm.prior_dd is None
    w = model.jfm.fusion_weights()
    assert w.shape == (2,) and (torch.allclose(w, torch.full((2,), 0.5)))


def test_a_batch_of_four_equals_four_single_pairs() -> None:
    model = _model().eval()
    images, tokens = _images(), _tokens()
    batched = model(images, tokens).logits
    single = torch.cat([model(images[i : i + 1], tokens[i : i + 1]).logits for i in range(4)])
    assert torch.allclose(batched, single, atol=1e-5)
    assert model.predict(images).tokens == [model.predict(images[i : i + 1]).tokens[0] for i in range(4)]


def test_save_and_load_reproduce_captions_and_the_prior(tmp_path: Path) -> None:
    model = _model().eval()
    vocab = Vocabulary.build([WORDS[:12]], threshold=0)
    assert len(vocab) == 16
    out = save_model(model, None, vocab, tmp_path / "dfm")
    loaded = load_model(out)
    assert isinstance(loaded, DFM) and loaded.config == model.config
    images = _images(2)
    assert loaded.predict(images).tokens == model.predict(images).tokens
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_the_prior_loads_from_a_trained_detector_directory(tmp_path: Path) -> None:
    torch.manual_seed(5)
    cd = {"architecture": "change_detection", "image_size": 64, "encoder": {"widths": [8, 16], "blocks": 1},
          "decoder_dim": 8, "vocab_size": 5}  # fmt: skip
    detector = build_model(config_from_dict(cd))
    from changecap.models import PreprocessConfig

    folder = save_model(detector, None, Vocabulary.build([["a"]], threshold=0), tmp_path / "cd")
    PreprocessConfig(image_size=64, resize_mode="resize", mean=(0.5, 0.5, 0.5), std=(0.2, 0.2, 0.2)).save(folder)
    model = _model(**{"prior": {"model_dir": str(folder)}})
    p = model.config.prior
    assert p.config["encoder"]["widths"] == [8, 16] and p.image_size == 64 and p.mean == [0.5, 0.5, 0.5]
    assert model.prior is not None
    for k, v in detector.state_dict().items():
        assert torch.equal(model.prior.detector.state_dict()[k], v), k
    assert model.eval()(_images(2), _tokens(2)).logits.shape == (2, 7, 16)  # 32 px input resized to 64 for it
    with pytest.raises(ModelError, match="model.prior.model_dir '.*nowhere': not a directory"):
        _model(**{"prior": {"model_dir": str(tmp_path / "nowhere")}})


def test_a_semantic_cc_change_branch_serves_as_the_prior(tmp_path: Path) -> None:
    from changecap.models import PreprocessConfig
    from tests.models.semantic_cc.conftest import WORDS as SCC_WORDS
    from tests.models.semantic_cc.conftest import tiny as tiny_scc

    torch.manual_seed(6)
    scc = build_model(config_from_dict(tiny_scc())).eval()
    scc.config.vocab_size = len(Vocabulary.build([SCC_WORDS], threshold=0))
    folder = save_model(scc, None, Vocabulary.build([SCC_WORDS], threshold=0), tmp_path / "scc")
    PreprocessConfig(image_size=64, resize_mode="resize", mean=(0.5, 0.5, 0.5), std=(0.2, 0.2, 0.2)).save(folder)
    model = _model(**{"prior": {"model_dir": str(folder), "level": 1}}).eval()
    assert model.config.prior.config["architecture"] == "semantic_cc"
    branch = model.prior.detector
    # the branch only: encoder, neck and CD decoder with the saved weights, no caption decoder (no LLM)
    assert not any(k.startswith("caption_decoder") for k in model.state_dict() if "prior" in k)
    assert {k.split(".")[0] for k in branch.state_dict()} == {"encoder", "neck", "cd_decoder"}
    for k, v in branch.state_dict().items():
        assert torch.equal(v, scc.state_dict()[k]), k
    pairs = torch.randn(2, 2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(branch(pairs), scc(pairs)[1])  # the change logits of the whole model
    images, tokens = _images(2), _tokens(2)
    logits = model(images, tokens).logits
    # the saved DFM rebuilds the branch from its recorded config (no model_dir needed) and reproduces the outputs
    out = save_model(model, None, Vocabulary.build([WORDS[:12]], threshold=0), tmp_path / "dfm")
    reloaded = load_model(out)
    torch.testing.assert_close(reloaded(images, tokens).logits, logits)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"decoder.dim": 16}, "model.decoder.dim"),
        ({"temporal.heads": 3}, "model.temporal.heads"),
        ({"jfm.bsa": "both"}, "model.jfm.bsa"),
        ({"prior": {}}, "model.prior.model_dir"),
        ({"prior.std": [1.0, 0.0, 1.0]}, "model.prior.std"),
        ({"text_dim": 0}, "model.text_dim"),
    ],
)
def test_bad_configs_are_one_line_errors(changes: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict(tiny(**changes))
    assert err.value.field == field and "\n" not in str(err.value)


def test_the_frozen_feature_cache_gives_the_same_memory_and_gradients() -> None:
    plain, cached = _model(), _model()
    cache = cached.encoder.enable_prefix_cache(10**8)  # block 0 of 2 is frozen (trainable_layers: 1)
    sentences = torch.randn(4, 16)
    for _ in range(2):  # misses, then hits
        grads = []
        for model in (plain, cached):
            model.zero_grad()
            torch.manual_seed(3)  # the same dropout masks for both
            memory, visual = model.memory(_images())
            loss = tgcl_loss(visual, model.text_embedding(sentences), torch.tensor([True, True, False, True]),
                             model.logit_scale) + memory.square().mean()  # fmt: skip
            loss.backward()
            grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
        assert grads[0].keys() == grads[1].keys()
        for name in grads[0]:
            assert torch.equal(grads[0][name], grads[1][name]), name
    assert cache.hits == 8 and cache.misses == 8


def test_predict_gives_attention_over_the_patch_grid_per_word() -> None:
    model = _model().eval()
    images = _images()
    out = model.predict(images, attention_maps=True, beam_size=2)
    assert out.tokens == model.predict(images, beam_size=2).tokens
    cells = model.memory(images)[0].shape[1]  # F_j: one cell per patch
    assert int(cells**0.5) ** 2 == cells
    for text, maps in zip(out.texts, out.attention_maps, strict=True):
        assert maps.shape == (len(text.split()), cells)
        torch.testing.assert_close(maps.sum(-1), torch.ones(len(maps)))
