"""The pretraining loop: tiny clip / lm runs lower their loss and write loadable directories atomically; the
contract holds for any target (a land-cover segmentation stand-in here); train-only data; configs and errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn

from changecap.engine.pretrain import CARD_FILE, pretrain
from changecap.engine.pretrain_config import PretrainConfig, load_pretrain_config
from changecap.errors import ConfigError, DataError, ModelError
from changecap.models.foundations import target as registry
from changecap.models.foundations.target import PretrainInputs, PretrainTarget
from changecap.models.parts.clip_encoder import EncoderConfig, build_clip_encoder
from tests.data.single_date_fakes import CLASSES, make_segmentation_folder, make_synthcc_single_dates
from tests.data.test_files import dead_pid
from tests.engine.test_curves import series as curve_series
from tests.engine.test_ddp import free_port
from tests.models.foundations.tiny_targets import TINY_CLIP, TINY_LM

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "configs" / "pretrain").glob("*.yaml"))


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread: None) -> None:
    """One torch thread: the xdist workers use every core, and results stay independent of the core count."""


def config(root: Path, out: Path, model: dict[str, Any], **train: Any) -> PretrainConfig:
    return PretrainConfig.from_dict(
        {
            "data": {"root": str(root), "image_size": 16, "holdout": 0.2},
            "model": model,
            "optim": {"lr": 3e-3},
            "schedule": {"warmup_steps": 2},
            "train": {"epochs": 6, "batch_size": 5, "device": "cpu", "output_dir": str(out), **train},
            "logging": {"log_every": 1, "progress": False},
        }
    )


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_clip_run_lowers_the_loss_and_writes_a_loadable_directory(tmp_path: Path) -> None:
    root = make_synthcc_single_dates(tmp_path / "synthcc")
    out = tmp_path / "clip"
    result = pretrain("clip", config(root, out, TINY_CLIP))
    assert result.updates == 12 and result.epochs_completed == 6  # 10 train images, batch 5
    losses = [e["contrastive"] for e in result.losses_by_epoch]
    assert losses[-1] < losses[0]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # the temp folder was renamed
    card = json.loads((out / CARD_FILE).read_text())
    assert card["target"] == "clip" and card["training"]["updates"] == 12
    assert card["data"]["images"] == 10 and card["data"]["held_out_images"] == 2 and card["data"]["split"] == "train"
    assert card["final_losses"] == result.final_losses and card["held_out"]["images"] == 2
    assert card["config"]["model"]["projection_dim"] == 16
    kinds = [r["kind"] for r in records(out / "metrics.jsonl")]
    assert kinds.count("train") == 12 and kinds.count("epoch") == 6 and kinds.count("eval") == 1
    drawn = curve_series((out / "curves.svg").read_text())  # the epoch means of its terms, its held-out figures
    assert len(drawn["loss"]) == len(drawn["contrastive"]) == 6 and "images" not in drawn
    encoder, _ = build_clip_encoder(EncoderConfig(pretrained=str(out), trainable_layers=1))
    saved = load_file(out / "model.safetensors")
    assert torch.equal(encoder.vision.state_dict()["post_layernorm.weight"],
                       saved["vision_model.post_layernorm.weight"])  # fmt: skip


@pytest.mark.parametrize("target", ["clip", "sam"])
def test_pretraining_opens_no_validation_or_test_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    root = make_synthcc_single_dates(tmp_path / "synthcc")
    opened: list[str] = []
    real_open = Image.open

    def recording_open(fp: Any, *args: Any, **kwargs: Any) -> Image.Image:
        opened.append(str(fp))
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", recording_open)
    model = TINY_CLIP if target == "clip" else {"config": TINY_SAM_16}
    pretrain(target, config(root, tmp_path / target, model, epochs=2))
    # 12 train images (10 trained on, 2 held out), each read once; clip reads no map, sam each image's map too
    assert len(opened) == (12 if target == "clip" else 24)
    assert not [p for p in opened if "/val/" in p or "/test/" in p]


def test_lm_run_lowers_the_loss_on_scene_and_pair_captions(tmp_path: Path) -> None:
    root = make_synthcc_single_dates(tmp_path / "synthcc")
    out = tmp_path / "lm"
    result = pretrain("lm", config(root, out, TINY_LM, epochs=3, batch_size=8))
    losses = [e["lm"] for e in result.losses_by_epoch]
    assert losses[-1] < losses[0]
    card = json.loads((out / CARD_FILE).read_text())
    assert card["data"]["texts"] == 10 * 3 + 5 * 4 and card["data"]["pair_captions"] == 24
    assert card["held_out"]["perplexity"] > 1.0
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in out.iterdir()}


def test_lm_run_on_documents_trains_one_sequence_per_image_or_pair(tmp_path: Path) -> None:
    root = make_synthcc_single_dates(tmp_path / "synthcc")
    out = tmp_path / "lm"
    lm = {"llm": {**TINY_LM["llm"], "max_position_embeddings": 96}, "tokenizer": {"vocab_size": 400, "max_length": 96}}
    cfg = config(root, out, lm, epochs=3, batch_size=4)
    cfg.data.documents = True
    result = pretrain("lm", cfg)
    losses = [e["lm"] for e in result.losses_by_epoch]
    assert losses[-1] < losses[0]
    card = json.loads((out / CARD_FILE).read_text())
    assert card["data"]["documents"] == 10 + 5  # the kept single dates and the kept pairs' caption sets
    assert card["held_out"]["captions_tokens"] > 0  # held out one caption per sequence, as without documents


#: a SAM vision encoder at the tiny data's 16 px (patch 4 → 4×4 tokens, one windowed and one global block)
TINY_SAM_16: dict[str, Any] = {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "mlp_dim": 32,
                               "output_channels": 8, "image_size": 16, "patch_size": 4, "window_size": 2,
                               "global_attn_indexes": [1]}  # fmt: skip
TINY_QFORMER_16: dict[str, Any] = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                                   "intermediate_size": 32}  # fmt: skip


def test_sam_run_learns_land_cover_and_loads_where_sam_weights_go(tmp_path: Path) -> None:
    from changecap.models.semantic_cc.config import SAMEncoderConfig
    from changecap.models.semantic_cc.encoder import build_sam_encoder

    root = make_synthcc_single_dates(tmp_path / "synthcc")
    out = tmp_path / "sam"
    result = pretrain("sam", config(root, out, {"config": TINY_SAM_16}, epochs=6))
    losses = [e["segmentation"] for e in result.losses_by_epoch]
    assert losses[-1] < losses[0]
    card = json.loads((out / CARD_FILE).read_text())
    assert card["data"]["landcover_classes"] == list(CLASSES)  # the head's classes: the data's
    held = card["held_out"]
    assert 0.0 <= held["mIoU"] <= 1.0 and held["pixels"] == 2 * 16 * 16
    assert {k for k in held if k.startswith("IoU_")} <= {f"IoU_{c.replace(' ', '_')}" for c in CLASSES}
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "config.yaml", "curves.svg", "metrics.jsonl", "model.safetensors", CARD_FILE]  # fmt: skip
    # through Semantic-CC's own loading path, as facebook/sam-vit-large
    encoder = build_sam_encoder(SAMEncoderConfig(pretrained=str(out), config=dict(TINY_SAM_16)))
    saved = load_file(out / "model.safetensors")
    loaded = encoder.sam.state_dict()
    assert torch.equal(loaded["layers.1.attn.qkv.base_layer.weight"], saved["vision_encoder.layers.1.attn.qkv.weight"])
    assert torch.equal(loaded["neck.conv1.weight"], saved["vision_encoder.neck.conv1.weight"])


def test_qformer_run_over_the_sam_and_lm_stand_ins_loads_into_semantic_cc(tmp_path: Path) -> None:
    from changecap.models import build_model, config_from_dict
    from tests.models.semantic_cc.conftest import tiny

    root = make_synthcc_single_dates(tmp_path / "synthcc")
    pretrain("sam", config(root, tmp_path / "sam", {"config": TINY_SAM_16}, epochs=1))
    pretrain("lm", config(root, tmp_path / "lm", TINY_LM, epochs=1, batch_size=8))
    model = {"sam": str(tmp_path / "sam"), "tokenizer": str(tmp_path / "lm"), "qformer": TINY_QFORMER_16,
             "num_query_tokens": 4, "embed_dim": 8}  # fmt: skip
    out = tmp_path / "qformer"
    result = pretrain("qformer", config(root, out, model, epochs=6, batch_size=5))
    first, last = result.losses_by_epoch[0], result.losses_by_epoch[-1]
    assert last["itg"] < first["itg"] and last["loss"] < first["loss"]
    held = json.loads((out / CARD_FILE).read_text())["held_out"]
    assert {"itc_loss", "itm_loss", "itg_loss", "image_to_text_R@1", "itm_accuracy", "itg_token_accuracy"} <= set(held)
    saved = json.loads((out / "config.json").read_text())
    d = tiny(**{"caption.qformer": saved["qformer"], "caption.num_query_tokens": saved["num_query_tokens"],
                "neck.cc_dim": saved["vision_width"], "caption.qformer_pretrained": str(out)})  # fmt: skip
    decoder = build_model(config_from_dict(d)).caption_decoder
    weights = load_file(out / "model.safetensors")
    assert torch.equal(decoder.query_tokens, weights["query_tokens"])
    for key, value in decoder.qformer.state_dict().items():
        assert torch.equal(value, weights[f"qformer.{key}"]), key


@dataclass
class SegConfig:
    width: int = 8


class TinySegmenter(nn.Module):
    """A land-cover target in the shape the sam target takes: per-pixel classes from images, maps as labels."""

    def __init__(self, config: SegConfig, inputs: PretrainInputs) -> None:
        super().__init__()
        assert inputs.landcover_classes is not None
        self.net = nn.Sequential(nn.Conv2d(3, config.width, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(config.width, len(inputs.landcover_classes), 1))  # fmt: skip

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        logits = self.net(batch["image"])  # [B, K, S, S]
        return {"segmentation": nn.functional.cross_entropy(logits, batch["landcover"], ignore_index=255)}

    def save_pretrained(self, out_dir: Path) -> None:
        save_file(self.state_dict(), str(Path(out_dir) / "model.safetensors"))


SEG = PretrainTarget("seg", "test segmenter", SegConfig, TinySegmenter, "images", ("landcover",), "nowhere")


def test_any_target_following_the_contract_trains_on_segmentation_maps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(registry.TARGETS, "seg", "tests.engine.test_pretrain:SEG")
    root = make_segmentation_folder(tmp_path / "mine", n=10)
    result = pretrain("seg", config(root, tmp_path / "seg", {"width": 8}, epochs=8))
    losses = [e["segmentation"] for e in result.losses_by_epoch]
    assert losses[-1] < losses[0] and result.held_out is None  # no evaluate(): no held-out figures
    assert "net.0.weight" in load_file(tmp_path / "seg" / "model.safetensors")
    with pytest.raises(DataError, match="the clip target needs captions for every training image; 10 of 10") as e:
        pretrain("clip", config(root, tmp_path / "clip", TINY_CLIP))
    assert "\n" not in str(e.value)


def test_a_failed_run_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_synthcc_single_dates(tmp_path / "synthcc")

    def broken(self: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        raise RuntimeError("boom")

    from changecap.models.foundations.clip import CLIPPretrainer

    monkeypatch.setattr(CLIPPretrainer, "forward", broken)
    with pytest.raises(RuntimeError, match="boom"):
        pretrain("clip", config(root, tmp_path / "clip", TINY_CLIP))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synthcc"]


def test_an_existing_output_is_replaced_only_when_asked(tmp_path: Path) -> None:
    root = make_synthcc_single_dates(tmp_path / "synthcc")
    out = tmp_path / "lm"
    out.mkdir()
    (out / "keep.txt").write_text("earlier work")
    cfg = config(root, out, TINY_LM, epochs=1, batch_size=8)
    with pytest.raises(ConfigError, match="train.output_dir.*already exists.*--overwrite"):
        pretrain("lm", cfg)
    assert (out / "keep.txt").exists()
    pretrain("lm", cfg, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / CARD_FILE).exists()


def test_a_killed_runs_temporary_folder_is_removed(tmp_path: Path) -> None:
    root = make_synthcc_single_dates(tmp_path / "synthcc")
    stale = tmp_path / f".lm.{dead_pid()}.k1ll3d.tmp"  # what a SIGKILL during a run leaves (no Python code ran)
    stale.mkdir()
    (stale / "metrics.jsonl").write_text("{}\n")
    pretrain("lm", config(root, tmp_path / "lm", TINY_LM, epochs=1, batch_size=8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lm", "synthcc"]


def test_target_errors_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_synthcc_single_dates(tmp_path / "synthcc")
    cfg = config(root, tmp_path / "out", TINY_CLIP)
    with pytest.raises(ConfigError, match="unknown pretraining target 'vit'"):
        pretrain("vit", cfg)
    monkeypatch.setitem(registry.TARGETS, "sam", "changecap.models.foundations.not_installed:TARGET")
    with pytest.raises(ModelError, match="pretraining target 'sam' is not available") as e:
        pretrain("sam", cfg)
    assert "\n" not in str(e.value)
    cfg.target = "lm"
    with pytest.raises(ConfigError, match="written for 'lm', not 'clip'"):
        pretrain("clip", cfg)
    bad = config(root, tmp_path / "out", {**TINY_CLIP, "projection_dim": 0})
    with pytest.raises(ConfigError, match="model.projection_dim"):
        pretrain("clip", bad)
    assert {"clip", "sam", "qformer", "lm"} <= set(registry.TARGETS)


def test_yaml_config_overrides_and_the_train_only_rule(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("target: clip\ndata: {root: somewhere}\ntrain: {output_dir: out}\n")
    cfg = load_pretrain_config(path, ["train.epochs=2", "optim.lr=1e-3"])
    assert cfg.train.epochs == 2 and cfg.optim.lr == 1e-3
    assert cfg.optim.name == "adamw" and cfg.optim.weight_decay == 0.1  # the pretraining defaults
    assert cfg.schedule.name == "cosine"
    assert PretrainConfig.from_dict(cfg.to_dict()) == cfg
    for override, field in [
        ("data.split=val", "data.split"),
        ("data.holdout=1.5", "data.holdout"),
        ("train.precision=fp8", "train.precision"),
        ("optim.lr=-1", "optim.lr"),
        ("data.normalize=dataset", "data.normalize"),
        ("train.batchsize=3", "train.batchsize"),
    ]:
        with pytest.raises(ConfigError) as e:
            load_pretrain_config(path, [override])
        assert e.value.field == field and e.value.path == str(path) and "\n" not in str(e.value)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_pretrain_configs_validate(path: Path) -> None:
    cfg = load_pretrain_config(path)
    assert cfg.target is not None and cfg.data.split == "train"
    registry.get_target(cfg.target).read_config(cfg.model)
    assert Path(cfg.train.output_dir).name == path.stem


def test_two_process_ddp_matches_one_process(tmp_path: Path) -> None:
    """The contrastive loss gathers the global batch: 2 processes × 5 images reach the weights of 1 × 10."""
    root = make_synthcc_single_dates(tmp_path / "synthcc", pairs={"train": 10})
    one = pretrain("clip", config(root, tmp_path / "one", TINY_CLIP, epochs=2, batch_size=10))
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
        "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
        str(REPO / "tests" / "engine" / "pretrain_ddp_worker.py"), str(root), str(tmp_path / "two"),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        if name.endswith("k_proj.bias"):
            continue  # no gradient in exact arithmetic (softmax ignores a shift of all keys): AdamW moves it by noise
        assert torch.allclose(a[name], b[name], atol=1e-5, rtol=1e-4), name
    two = json.loads((tmp_path / "two" / CARD_FILE).read_text())
    assert two["training"]["processes"] == 2
    assert two["final_losses"]["contrastive"] == pytest.approx(one.final_losses["contrastive"], rel=1e-4)


def test_bf16_autocast_and_max_steps(tmp_path: Path) -> None:
    root = make_synthcc_single_dates(tmp_path / "synthcc")
    result = pretrain("clip", config(root, tmp_path / "clip", TINY_CLIP, precision="bf16", max_steps=3))
    assert result.updates == 3 and result.epochs_completed == 2  # stopped inside the second epoch
    assert all(torch.isfinite(torch.tensor(v)) for v in result.final_losses.values())
    card = json.loads((tmp_path / "clip" / CARD_FILE).read_text())
    assert card["training"]["precision"] == "bf16" and card["held_out"] is not None
