"""The Semantic-CC objective with the real trainer on tiny data: stages freeze exactly what the paper says (checked
through the parameters that move), schedules, the pixel loss, and a run that saves a loadable model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml

from changecap.engine import Trainer, load_config
from changecap.engine.objectives.semantic_cc import SemanticCCLossConfig, SemanticCCObjective
from changecap.errors import ConfigError
from changecap.models import load_model
from changecap.models.parts.change_masks import binary_change_loss_sum
from tests.data.fakes import make_levir
from tests.models.semantic_cc.conftest import tiny


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread: None) -> Iterator[None]:
    yield


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_levir(tmp_path_factory.mktemp("levir") / "mci", "levir-mci", {"train": 4, "val": 2, "test": 2}, 64)


def write_config(folder: Path, root: Path, loss: dict | None = None, **train: object) -> Path:
    model = tiny()
    model["caption"]["llm_config"].pop("tokenizer_words")  # filled in from the data vocabulary by the trainer
    cfg = {
        "data": {"root": str(root), "format": "levir-mci", "image_size": 64, "normalize": "imagenet",
                 "vocab": {"splits": "train", "threshold": 0}, "max_length": 20},
        "model": model,
        "optim": {"name": "adamw", "lr": 1e-3, "weight_decay": 0.05},
        "loss": loss or {},
        "train": {"epochs": 1, "batch_size": 2, "output_dir": str(folder / "run"), "val_every": 1,
                  "val_batch_size": 2, **train},
        "logging": {"progress": False, "log_every": 1},
    }  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    return folder / "cfg.yaml"


def test_three_stages_train_exactly_their_parts(tmp_path: Path, data_root: Path) -> None:
    moved: list[tuple[str, set[str]]] = []
    before: dict[str, torch.Tensor] = {}

    def watch(trainer: Trainer) -> None:
        now = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
        changed = {n for n in now if not torch.equal(now[n], before[n])}
        moved.append((trainer.current_phase.name, changed))
        before.update(now)

    trainer = Trainer(load_config(write_config(tmp_path, data_root)), callbacks=[watch])
    before.update({n: p.detach().clone() for n, p in trainer.model.named_parameters()})
    result = trainer.fit()
    # 4 training pairs, all with masks and captions: 2 updates per stage
    assert [phase for phase, _ in moved] == ["cd", "cd", "cc", "cc", "neck", "neck"]
    for phase, names in moved:
        tops = {n.split(".")[0] for n in names}
        if phase == "cd":
            assert tops == {"encoder", "neck", "cd_decoder"}
            assert all(".intra_cd." in n for n in names if n.startswith("neck."))  # the neck's CD side only
            assert any("lora_" in n for n in names) and any(".bcsf." in n for n in names)
        elif phase == "cc":
            assert tops == {"neck", "caption_decoder"}  # the image encoder is frozen
            assert not any(".intra_cd." in n for n in names)
            assert all("lora_" in n for n in names if n.startswith("caption_decoder.llm."))
            assert not any(n.startswith(("caption_decoder.qformer", "caption_decoder.query_tokens")) for n in names)
        else:
            assert tops == {"neck"}
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    trains = [r for r in records if r["kind"] == "train"]
    assert {r["phase"] for r in trains} == {"cd", "cc", "neck"}
    assert all("cd_loss" in r for r in trains if r["phase"] in ("cd", "neck"))
    assert all("caption_ce" in r for r in trains if r["phase"] in ("cc", "neck"))
    val = [r for r in records if r["kind"] == "val"]
    assert val and "Bleu_4" in val[0] and "cd_F1" in val[0]  # captions and masks validated in one pass
    model = load_model(result.last_dir)
    assert model.config.vocab_size == len(trainer.vocab)
    assert model.config.caption.llm_config["tokenizer_words"]  # the word-level tokenizer, from the data


@pytest.mark.parametrize(
    ("schedule", "phases", "tasks"),
    [
        ("2-stage", ["cd", "cc"], ["cd", "cc"]),
        ("1-stage", ["joint"], ["both"]),
        ("caption-only", ["caption"], ["cc"]),
        ("cd-only", ["cd"], ["cd"]),
    ],
)
def test_other_schedules(schedule: str, phases: list[str], tasks: list[str]) -> None:
    objective = SemanticCCObjective(SemanticCCLossConfig(schedule=schedule), units=1)
    assert [p.name for p in objective.phases(0)] == phases
    assert [p.options["tasks"] for p in objective.phases(0)] == tasks
    if schedule in ("1-stage", "caption-only"):
        assert objective.phases(0)[0].trainable is None  # everything the model trains


def test_stage_passes_repeat_a_stage_in_place() -> None:
    config = SemanticCCLossConfig(stage_passes={"cc": 3})
    assert [p.name for p in SemanticCCObjective(config, units=1).phases(0)] == ["cd", "cc", "cc", "cc", "neck"]


def test_stage_passes_run_in_the_trainer_with_their_own_data_orders(tmp_path: Path, data_root: Path) -> None:
    trainer = Trainer(load_config(write_config(tmp_path, data_root, {"stage_passes": {"cc": 2}}, val_every=0)))
    trainer.fit()
    # 4 training pairs at batch 2: 2 updates per pass, 4 passes in the epoch
    assert trainer.progress.global_step == 8


@pytest.mark.parametrize(
    ("passes", "field"), [({"decoder": 2}, "stage_passes.decoder"), ({"cc": 0}, "stage_passes.cc")]
)
def test_bad_stage_passes_name_the_field(tmp_path: Path, data_root: Path, passes: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        load_config(write_config(tmp_path, data_root, {"stage_passes": passes}))


def test_caption_only_never_moves_the_cd_decoder(tmp_path: Path, data_root: Path) -> None:
    trainer = Trainer(load_config(write_config(tmp_path, data_root, {"schedule": "caption-only"}, val_every=0)))
    start = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.fit()
    moved = {n.split(".")[0] for n, p in trainer.model.named_parameters() if not torch.equal(p, start[n])}
    assert "cd_decoder" not in moved and {"encoder", "caption_decoder"} <= moved


def test_pixel_loss_binarises_and_ignores() -> None:
    mask = torch.tensor([[[0, 1], [2, 255]]])  # classes 1 and 2 are both "change"
    logits = torch.tensor([[[[0.5, -1.0], [2.0, 9.0]]]])  # [1, 1, 2, 2]: BCE form
    total, count = binary_change_loss_sum(logits, mask)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.tensor([0.5, -1.0, 2.0]), torch.tensor([0.0, 1.0, 1.0]), reduction="sum"
    )
    assert int(count) == 3 and torch.allclose(total, expected)
    two = torch.stack([torch.zeros(2, 2), logits[0, 0]])[None]  # [1, 2, 2, 2]: CE form
    total, count = binary_change_loss_sum(two, mask)
    expected = torch.nn.functional.cross_entropy(
        two.permute(0, 2, 3, 1).reshape(-1, 2)[:3], torch.tensor([0, 1, 1]), reduction="sum"
    )
    assert int(count) == 3 and torch.allclose(total, expected)


def test_a_mixed_dataset_trains_each_stage_on_its_pairs(tmp_path: Path, data_root: Path) -> None:
    """Main set with masks and captions (LEVIR-MCI, 4 train pairs) + mask-only pairs (levir-cd, 4) + caption-only
    pairs (levir-cc, 2): stage i reads 8 pairs, stage ii 6, stage iii 4 (batch 2 → 4 + 3 + 2 updates). (Even
    counts: the tiny CD head's BatchNorm sees a 1×1 map at its coarsest level, which a batch of 1 cannot normalise.)"""
    from tests.data.fakes import make_levir_cd

    cd_root = make_levir_cd(tmp_path / "cd", 4, 64)
    cc_root = make_levir(tmp_path / "cc", "levir-cc", {"train": 2, "val": 1, "test": 1}, 64)
    cfg = write_config(tmp_path, data_root, val_every=0)
    data = yaml.safe_load(cfg.read_text())
    data["data"]["extra"] = [{"root": str(cd_root), "format": "levir-cd"}, {"root": str(cc_root), "format": "levir-cc"}]
    cfg.write_text(yaml.safe_dump(data))
    phases: list[str] = []
    trainer = Trainer(load_config(cfg), callbacks=[lambda t: phases.append(t.current_phase.name)])
    result = trainer.fit()
    assert result.finished and phases == ["cd"] * 4 + ["cc"] * 3 + ["neck"] * 2
    assert len(trainer.train_set) == 4 + 4 + 2


def test_change_weight_scales_the_change_pixels_only() -> None:
    mask = torch.tensor([[[0, 1], [2, 255]]])
    one = torch.tensor([[[[0.5, -1.0], [2.0, 9.0]]]])  # BCE form
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    total, count = binary_change_loss_sum(one, mask, 3.0)
    expected = bce(torch.tensor(0.5), torch.tensor(0.0)) + 3.0 * (
        bce(torch.tensor(-1.0), torch.tensor(1.0)) + bce(torch.tensor(2.0), torch.tensor(1.0))
    )
    assert int(count) == 3 and torch.allclose(total, expected)
    two = torch.randn(1, 2, 2, 2)  # CE form: class 0 keeps weight 1
    ce = torch.nn.functional.cross_entropy(two.permute(0, 2, 3, 1).reshape(-1, 2)[:3], torch.tensor([0, 1, 1]),
                                           reduction="none")  # fmt: skip
    assert torch.allclose(binary_change_loss_sum(two, mask, 3.0)[0], ce[0] + 3.0 * (ce[1] + ce[2]))


class _FixedLogits(torch.nn.Module):
    """A stand-in model whose change logits are given: what the objective does with them is under test."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def features(self, images: torch.Tensor) -> tuple[None, None]:
        return None, None

    def change_logits(self, f_cd: None) -> torch.Tensor:
        return self.logits


@pytest.mark.parametrize("denominator", ["labelled", "all"])
def test_cd_denominator_divides_by_labelled_or_all_pixels(denominator: str) -> None:
    """Two 2×2 masks, 3 of 8 pixels ignored: L_cd is the summed BCE of the 5 labelled pixels over 5 (labelled) or
    over 8 (all: the released code's mmseg loss with avg_non_ignore=False)."""
    from changecap.engine.objectives.base import GlobalCounts, StepInfo, combine_terms

    mask = torch.tensor([[[0, 1], [255, 1]], [[255, 255], [0, 2]]])  # [B = 2, 2, 2]
    logits = torch.tensor([[[[0.5, -1.0], [7.0, 2.0]]], [[[3.0, -4.0], [1.5, 0.2]]]])  # [2, 1, 2, 2]: BCE form
    objective = SemanticCCObjective(SemanticCCLossConfig(schedule="cd-only", cd_denominator=denominator), units=1)
    phase = objective.phases(0)[0]
    batch = {"name": ["a", "b"], "image": torch.zeros(2, 2, 3, 2, 2), "mask": mask}
    counts = objective.normalizers(batch, phase)
    assert counts["pixels"] == (5.0 if denominator == "labelled" else 8.0)
    step = StepInfo(0, phase, GlobalCounts(counts, world_size=1, grad_accum=1), torch.device("cpu"))
    out = combine_terms(objective(_FixedLogits(logits), batch, step), step.counts)
    labelled = mask != 255
    bce = torch.nn.functional.binary_cross_entropy_with_logits(
        logits[:, 0][labelled], (mask[labelled] > 0).float(), reduction="sum"
    )
    expected = bce / (5 if denominator == "labelled" else 8)
    torch.testing.assert_close(out.loss, expected)
    total, count = out.stats["cd_loss"]
    torch.testing.assert_close(total / count, expected)


def test_cd_denominator_is_checked() -> None:
    with pytest.raises(ConfigError, match="loss.cd_denominator"):
        SemanticCCObjective.read_config({"cd_denominator": "valid"}, None)


class _FixedHeads(_FixedLogits):
    """A stand-in with both heads: fixed change logits and a fixed caption loss sum over 7 tokens."""

    num_instructions = 1

    def caption_target_length(self, caption: str) -> int:
        return len(caption.split())

    def caption_loss_sum(self, f_cc: None, captions: list[str], instructions: list[int]) -> tuple[torch.Tensor, ...]:
        return torch.tensor(5.5), torch.tensor(7)


@pytest.mark.parametrize(
    ("phase", "expected"),
    [("cd", {"cd_loss": ("pixels", 1.0)}), ("cc", {"caption_ce": ("tokens", 1.0)}),
     ("neck", {"cd_loss": ("pixels", 0.3), "caption_ce": ("tokens", 1.0)})],
)  # fmt: skip
def test_each_stage_returns_its_named_unscaled_terms(phase: str, expected: dict) -> None:
    """The CD-only stage weighs L_cd 1, the joint stages λ; the terms are sums the base scales."""
    from changecap.engine.objectives.base import GlobalCounts, StepInfo

    objective = SemanticCCObjective(SemanticCCLossConfig(cd_weight=0.3), units=1)
    mask = torch.tensor([[[0, 1], [255, 1]]])  # [B = 1, 2, 2]
    model = _FixedHeads(torch.tensor([[[[0.5, -1.0], [7.0, 2.0]]]]))
    objective.bind(model)
    stage = next(p for p in objective.phases(0) if p.name == phase)
    batch = {"name": ["a"], "image": torch.zeros(1, 2, 3, 2, 2), "mask": mask, "caption": ["a house is built"]}
    counts = GlobalCounts(objective.normalizers(batch, stage), world_size=1, grad_accum=1)
    out = objective(model, batch, StepInfo(0, stage, counts, torch.device("cpu")))
    assert {name: (t.normalizer, t.weight) for name, t in out.terms.items()} == expected and not out.stats
    if "cd_loss" in out.terms:
        assert float(out.terms["cd_loss"].count) == 3.0  # labelled pixels
        torch.testing.assert_close(out.terms["cd_loss"].value, binary_change_loss_sum(model.logits, mask)[0])
    if "caption_ce" in out.terms:
        assert float(out.terms["caption_ce"].value) == 5.5 and int(out.terms["caption_ce"].count) == 7
