"""The change-detection model through the whole toolkit on tiny data: the real trainer (mask pairs only, validation
on the CD metrics, selection on ``cd_F1``), caption-less LEVIR-CD folders, and the user paths — ``ChangeCaptioner``
(masks, no caption), ``changecap caption --mask``, ``changecap evaluate`` (CD metrics and mask files, no caption
metrics) and the HTML report."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from changecap.cli.main import main
from changecap.engine import Trainer, load_config
from changecap.inference import ChangeCaptioner, evaluate_model, write_html_report
from changecap.models import load_model
from tests.data.fakes import make_levir, make_levir_cd

MODEL = {"architecture": "change_detection", "image_size": 64, "encoder": {"widths": [8, 16, 32], "blocks": 1},
         "decoder_dim": 8}  # fmt: skip


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread: None) -> Iterator[None]:
    yield


def write_config(folder: Path, root: Path, fmt: str, **train: object) -> Path:
    cfg = {
        "data": {"root": str(root), "format": fmt, "image_size": 64, "normalize": "imagenet",
                 "vocab": {"splits": "train", "threshold": 0}},
        "model": MODEL,
        "optim": {"name": "adamw", "lr": 1e-3},
        "train": {"epochs": 2, "batch_size": 2, "output_dir": str(folder / "run"), "val_every": 1,
                  "val_batch_size": 4, "select_metric": "cd_F1", **train},
        "logging": {"progress": False, "log_every": 1},
    }  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    return folder / "cfg.yaml"


@pytest.fixture(scope="module")
def levir_cd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_levir_cd(tmp_path_factory.mktemp("lcd") / "data", n=4, size=64, splits=["train", "val", "test"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, levir_cd: Path) -> Path:
    """A detector trained 2 epochs on a caption-less LEVIR-CD folder; its ``best`` directory."""
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("run")
    result = Trainer(load_config(write_config(folder, levir_cd, "levir-cd"))).fit()
    assert result.finished and result.select_metric == "cd_F1"
    records = [json.loads(x) for x in (folder / "run" / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in records if r["kind"] == "val"]
    assert len(val) == 2 and all({"cd_F1", "cd_IoU", "cd_precision", "cd_recall", "cd_OA"} <= set(r) for r in val)
    assert not any("Bleu_4" in r for r in val)  # no captions, no caption metrics
    assert all("cd_loss" in r for r in records if r["kind"] == "train")
    return result.best_dir


def test_only_pairs_with_masks_train_and_every_part_moves(tmp_path: Path) -> None:
    """LEVIR-MCI (4 train pairs with masks and captions) + caption-only LEVIR-CC pairs (3): the phase reads the 4."""
    mci = make_levir(tmp_path / "mci", "levir-mci", {"train": 4, "val": 2, "test": 2}, 64)
    cc = make_levir(tmp_path / "cc", "levir-cc", {"train": 3, "val": 1, "test": 1}, 64)
    cfg = write_config(tmp_path, mci, "levir-mci", epochs=1)
    data = yaml.safe_load(cfg.read_text())
    data["data"]["extra"] = [{"root": str(cc), "format": "levir-cc"}]
    cfg.write_text(yaml.safe_dump(data))
    trainer = Trainer(load_config(cfg))
    start = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    (phase,) = trainer.epoch_data(0)
    assert phase.phase.name == "cd" and phase.steps_per_epoch == 2  # 4 mask pairs of 7, batch 2
    trainer.fit()
    moved = {n.split(".")[0] for n, p in trainer.model.named_parameters() if not torch.equal(p, start[n])}
    assert moved == {"encoder", "fusion", "decoder"}


def test_the_captioner_gives_masks_and_no_caption(trained: Path, levir_cd: Path) -> None:
    model = load_model(trained)
    assert model.config.architecture == "change_detection"
    captioner = ChangeCaptioner.from_pretrained(trained, device="cpu")
    assert captioner.capabilities.change_mask
    rng = np.random.default_rng(0)
    before, after = rng.integers(0, 256, (80, 96, 3), dtype=np.uint8), rng.integers(0, 256, (80, 96, 3), dtype=np.uint8)
    out = captioner(before, after)
    assert out.caption is None and out.tokens == [] and out.change_probability is None
    assert out.mask.shape == (80, 96) and set(np.unique(out.mask)) <= {0, 1}


def test_caption_cli_writes_the_mask(trained: Path, levir_cd: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    a, b = levir_cd / "test" / "A" / "test_0000.png", levir_cd / "test" / "B" / "test_0000.png"
    mask = tmp_path / "mask.png"
    assert main(["caption", str(a), str(b), "--model", str(trained), "--device", "cpu", "--mask", str(mask)]) == 0
    assert "changed pixels:" in capsys.readouterr().out
    written = np.asarray(Image.open(mask))
    assert written.shape == (64, 64) and set(np.unique(written)) <= {0, 255}


def test_evaluate_reports_cd_metrics_writes_masks_and_a_report(trained: Path, levir_cd: Path, tmp_path: Path) -> None:
    ev = evaluate_model(trained, levir_cd, "levir-cd", "test", out_dir=tmp_path / "eval", meteor="off",
                        progress=False, device="cpu")  # fmt: skip
    assert ev.results == {} and ev.result is None and ev.change_detection is not None
    assert len(ev.masks) == 4
    written = sorted(p.name for p in Path(ev.files["masks"]).iterdir())
    assert written == [f"test_{i:04d}.png" for i in range(4)]
    metrics = json.loads(Path(ev.files["metrics"]).read_text())
    assert set(metrics) == {"model", "change_detection"}
    report = write_html_report(tmp_path / "report.html", evaluation=ev, data_root=levir_cd, fmt="levir-cd",
                               split="test", num_examples=4)  # fmt: skip
    text = report.read_text()
    assert "predicted change" in text and "Change detection" in text and "rsicc protocol" not in text
    code = main(["evaluate", "--model", str(trained), "--data", str(levir_cd), "--format", "levir-cd",
                 "--split", "test", "--meteor", "off", "--device", "cpu", "--out", str(tmp_path / "cli")])  # fmt: skip
    assert code == 0 and (tmp_path / "cli" / "masks_test").is_dir()


def test_the_objective_returns_the_pixel_loss_as_a_named_unscaled_term() -> None:
    from changecap.engine.objectives.base import GlobalCounts, StepInfo
    from changecap.engine.objectives.change_detection import ChangeDetectionObjective
    from changecap.models.parts.change_masks import binary_change_loss_sum

    logits = torch.tensor([[[[0.5, -1.0], [7.0, 2.0]]]])  # [B = 1, 1, 2, 2]
    mask = torch.tensor([[[0, 1], [255, 1]]])  # one pixel ignored
    objective = ChangeDetectionObjective()
    batch = {"image": torch.zeros(1, 2, 3, 2, 2), "mask": mask}
    phase = objective.phases(0)[0]
    counts = GlobalCounts(objective.normalizers(batch, phase), world_size=1, grad_accum=1)
    out = objective(lambda image: logits, batch, StepInfo(0, phase, counts, torch.device("cpu")))
    assert list(out.terms) == ["cd_loss"] and not out.stats
    term = out.terms["cd_loss"]
    assert (term.normalizer, term.weight, int(term.count)) == ("pixels", 1.0, 3)
    torch.testing.assert_close(term.value, binary_change_loss_sum(logits, mask)[0])
