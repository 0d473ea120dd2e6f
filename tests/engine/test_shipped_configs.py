"""Every YAML under configs/ loads, validates (model section included) and, for CPU configs, builds its model; the
CPU configs that start from stand-ins build from stand-ins of their pretraining configs' architectures (made here,
untrained, in place of the cached ones) with the paper's frozen/trainable split."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from changecap.data.vocab import Vocabulary
from changecap.engine import load_config
from changecap.engine.config import validate_loss_section
from changecap.engine.model_setup import default_model_builder

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def test_configs_exist() -> None:
    names = {p.name for p in CONFIGS}
    assert {"hisem_levircc.yaml", "hisem_whucdc.yaml", "hisem_synthcc_cpu.yaml", "plain_synthcc_cpu.yaml"} <= names
    assert {"semantic_cc_levircc.yaml", "semantic_cc_synthcc_cpu.yaml"} <= names
    assert {"change_detection_synthcc_cpu.yaml", "dfm_levircc.yaml", "dfm_synthcc_cpu.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_loads_and_round_trips(path: Path, tmp_path: Path) -> None:
    cfg = load_config(path)
    assert cfg.train.select_metric in ("Bleu_4", "CIDEr", "cd_F1") and cfg.train.batch_size % cfg.train.grad_accum == 0
    again = load_config(cfg.save(tmp_path / path.name))
    assert again == cfg


def test_paper_configs_follow_the_paper() -> None:
    for name in ("hisem_levircc.yaml", "hisem_whucdc.yaml"):
        cfg = load_config(CONFIGS[0].parent / name)
        assert cfg.model["encoder"]["pretrained"] == "openai/clip-vit-base-patch16"
        assert cfg.model["encoder"]["trainable_layers"] == 4
        assert (cfg.data.image_size, cfg.data.resize_mode, cfg.data.normalize) == (224, "clip", "clip")
        assert (cfg.train.batch_size, cfg.train.epochs, cfg.optim.lr, cfg.schedule.name) == (64, 50, 1e-4, "constant")
        loss = validate_loss_section(cfg)
        assert (loss.gt_routing_until_epoch, loss.router_warmup_epochs, loss.router_weight) == (40, 3, 0.8)
        assert cfg.optim.name == "adam" and cfg.optim.group_lr == {}
    assert load_config(CONFIGS[0].parent / "hisem_levircc.yaml").data.vocab.rule == "ge"  # V = 501 convention


@pytest.mark.parametrize("name", ["hisem_synthcc_cpu_scratch.yaml", "plain_synthcc_cpu.yaml"])
def test_cpu_configs_build_a_small_model(name: str) -> None:
    cfg = load_config(CONFIGS[0].parent / name)
    vocab = Vocabulary.build([["a", "b"]], threshold=0)
    model, model_config = default_model_builder(cfg.model, vocab, 27)
    assert model_config.vocab_size == len(vocab) and model_config.max_length == 27
    counts = model.parameter_counts()
    assert counts["trainable"] == counts["total"] < 3_000_000
    out = model(torch.zeros(1, 2, 3, 64, 64), torch.tensor([[2, 4, 3] + [0] * 24]))
    assert out.logits.shape == (1, 27, len(vocab))
    assert (out.router_logits is None) == (model_config.architecture == "plain")


def test_semantic_cc_cpu_config_builds_a_small_fully_trainable_model() -> None:
    cfg = load_config(CONFIGS[0].parent / "semantic_cc_synthcc_cpu_scratch.yaml")
    vocab = Vocabulary.build([["a", "house", "is", "built"]], threshold=0)
    model, model_config = default_model_builder(cfg.model, vocab, 27)
    assert model_config.vocab_size == len(vocab) and model_config.max_length == 27
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert sum(p.numel() for p in model.parameters()) < 5_000_000
    # random init: everything trains (no LoRA) but the visual LayerNorm in front of the Q-Former (identity at init)
    assert frozen == ["caption_decoder.ln_vision.weight", "caption_decoder.ln_vision.bias"]
    f_cc, logits = model(torch.zeros(1, 2, 3, 64, 64))
    assert logits.shape == (1, 1, 64, 64)


def test_change_detection_cpu_config_builds_a_small_detector() -> None:
    cfg = load_config(CONFIGS[0].parent / "change_detection_synthcc_cpu.yaml")
    model, model_config = default_model_builder(cfg.model, Vocabulary.build([["a"]], threshold=0), 27)
    assert cfg.train.select_metric == "cd_F1" and sum(p.numel() for p in model.parameters()) < 2_000_000
    assert model(torch.zeros(1, 2, 3, 128, 128)).shape == (1, 1, 128, 128)


def test_dfm_configs_build(tmp_path: Path) -> None:
    """The CPU config with a (random) prior config in place of the trained detector it names; the paper config on
    the meta device, as ``changecap summary`` does (its prior architecture is given inline)."""
    cfg = load_config(CONFIGS[0].parent / "dfm_synthcc_cpu_scratch.yaml")
    section = dict(cfg.model)
    section["prior"] = {**section["prior"], "model_dir": None,
                        "config": {"image_size": 128, "encoder": {"widths": [16, 32, 64, 128]}}}  # fmt: skip
    vocab = Vocabulary.build([["a", "house", "is", "built"]], threshold=0)
    model, model_config = default_model_builder(section, vocab, 27)
    assert model_config.vocab_size == len(vocab) and model.prior is not None
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable < 5_000_000
    out = model(torch.zeros(1, 2, 3, 64, 64), torch.tensor([[2, 4, 3] + [0] * 24]))
    assert out.logits.shape == (1, 27, len(vocab)) and out.visual.shape == (1, 128)
    paper = load_config(CONFIGS[0].parent / "dfm_levircc.yaml")
    assert paper.model["encoder"]["pretrained"] == "openai/clip-vit-base-patch32"
    assert validate_loss_section(paper).sentence_model == "sentence-transformers/all-mpnet-base-v2"


# ---------------------------------------------------------------------------------------------------- stand-ins
PRETRAIN = CONFIGS[0].parent / "pretrain"
CAPTIONS = ["a house is built on the left", "the scene is the same as before", "a road at the bottom", "woods"]


@pytest.fixture(scope="module")
def standins(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An untrained stand-in of every shipped pretraining config, saved as its target saves it."""
    from changecap.data.pretrain_data import resolve_mean_std
    from changecap.engine.pretrain_config import load_pretrain_config
    from changecap.models.foundations import get_target
    from changecap.models.foundations.target import PretrainInputs

    folder = tmp_path_factory.mktemp("standins")
    out: dict[str, Path] = {}
    for name in ("clip", "sam", "lm", "qformer"):  # the qformer reads the sam and lm stand-ins
        cfg = load_pretrain_config(PRETRAIN / f"{name}_synthcc_cpu.yaml")
        model = dict(cfg.model)
        if name == "qformer":
            model.update(sam=str(out["sam"]), tokenizer=str(out["lm"]))
        target = get_target(name)
        mean, std = resolve_mean_std(cfg.data.normalize)
        inputs = PretrainInputs(CAPTIONS * 3, cfg.data.image_size, cfg.data.resize_mode, mean, std,
                                [f"class{i}" for i in range(8)], 0)  # fmt: skip
        torch.manual_seed(0)
        target.build(target.read_config(model), inputs).save_pretrained(folder / name)
        out[name] = folder / name
    return out


def with_standins(section: dict, standins: dict[str, Path]) -> dict:
    """The model section with each ``standin:pretrain/<target>_synthcc_cpu.yaml`` replaced by that stand-in."""
    from changecap.engine.standins import PREFIX

    def swap(value: object) -> object:
        if isinstance(value, dict):
            return {k: swap(v) for k, v in value.items()}
        if isinstance(value, str) and value.startswith(PREFIX):
            stem = Path(value[len(PREFIX) :]).stem
            assert (CONFIGS[0].parent / value[len(PREFIX) :]).is_file(), value
            return str(standins[stem.removesuffix("_synthcc_cpu")])
        return value

    return swap(section)  # type: ignore[return-value]


@pytest.mark.parametrize("name", ["hisem_synthcc_cpu.yaml", "dfm_synthcc_cpu.yaml"])
def test_clip_configs_start_from_the_clip_stand_in_with_the_last_4_blocks_trained(
    name: str, standins: dict[str, Path]
) -> None:
    cfg = load_config(CONFIGS[0].parent / name)
    assert cfg.model["encoder"]["pretrained"] == "standin:pretrain/clip_synthcc_cpu.yaml"
    assert cfg.train.frozen_feature_cache_gb > 0
    section = with_standins(dict(cfg.model), standins)
    if name.startswith("dfm"):
        section["prior"] = {**section["prior"], "model_dir": None,
                            "config": {"image_size": 128, "encoder": {"widths": [16, 32, 64, 128]}}}  # fmt: skip
    vocab = Vocabulary.build([["a", "house", "is", "built"]], threshold=0)
    model, _ = default_model_builder(section, vocab, 27)
    trainable = {n for n, p in model.encoder.named_parameters() if p.requires_grad}
    blocks = {int(n.split(".")[3]) for n in trainable if n.startswith("vision.encoder.layers.")}
    assert model.encoder.num_layers == 8 and blocks == {4, 5, 6, 7}  # the last 4 of 8, as the paper's 4 of 12
    assert trainable - {n for n in trainable if ".layers." in n} == {"vision.post_layernorm.weight",
                                                                    "vision.post_layernorm.bias"}  # fmt: skip
    from safetensors.torch import load_file

    saved = load_file(standins["clip"] / "model.safetensors")
    assert torch.equal(model.encoder.vision.state_dict()["encoder.layers.0.self_attn.q_proj.weight"],
                       saved["vision_model.encoder.layers.0.self_attn.q_proj.weight"])  # fmt: skip


def test_semantic_cc_config_starts_from_its_stand_ins_with_the_papers_split(standins: dict[str, Path]) -> None:
    cfg = load_config(CONFIGS[0].parent / "semantic_cc_synthcc_cpu.yaml")
    caption = cfg.model["caption"]
    assert cfg.model["encoder"]["pretrained"] == "standin:pretrain/sam_synthcc_cpu.yaml"
    assert caption["qformer_pretrained"] == "standin:pretrain/qformer_synthcc_cpu.yaml"
    assert caption["llm"] == "standin:pretrain/lm_synthcc_cpu.yaml" and caption["bundle_llm"]
    vocab = Vocabulary.build([["a", "house", "is", "built"]], threshold=0)
    model, _ = default_model_builder(with_standins(dict(cfg.model), standins), vocab, 27)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    sam = {n for n in trainable if n.startswith("encoder.sam.")}
    assert sam and all("lora_" in n for n in sam)  # SAM trunk frozen, LoRA trains
    assert any(n.startswith("encoder.bcsf.") for n in trainable)  # the change filters train
    assert not {n for n in trainable if n.startswith(("caption_decoder.qformer.", "caption_decoder.ln_vision"))}
    assert "caption_decoder.query_tokens" not in trainable  # the Q-Former is frozen
    llm = {n for n in trainable if n.startswith("caption_decoder.llm.")}
    assert llm and all("lora_" in n for n in llm)  # the LLM frozen, LoRA trains
    assert any(n.startswith("caption_decoder.enhancer_proj") for n in trainable)
    assert any(n.startswith("neck.") for n in trainable) and any(n.startswith("cd_decoder.") for n in trainable)
    f_cc, logits = model(torch.zeros(1, 2, 3, 64, 64))
    assert logits.shape == (1, 1, 64, 64)
