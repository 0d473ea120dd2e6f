"""Models with a change-detection head (Semantic-CC): masks from ChangeCaptioner, `caption --mask`, CD metrics in
`evaluate`; a model without one refuses `--mask` in one line."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from changecap.cli.main import main
from changecap.data.vocab import Vocabulary
from changecap.inference import ChangeCaptioner, evaluate_model
from changecap.models import build_model, save_model
from tests.data.fakes import make_levir
from tests.models.semantic_cc.conftest import WORDS


def test_masks_come_back_at_the_input_size(scc_dir: Path) -> None:
    captioner = ChangeCaptioner.from_pretrained(scc_dir, device="cpu")
    assert captioner.capabilities.change_mask
    rng = np.random.default_rng(0)
    before, after = rng.integers(0, 256, (80, 96, 3), dtype=np.uint8), rng.integers(0, 256, (80, 96, 3), dtype=np.uint8)
    out = captioner(before, after)
    assert isinstance(out.caption, str) and out.change_probability is None
    assert out.mask.shape == (80, 96) and set(np.unique(out.mask)) <= {0, 1}
    batch = captioner([before, before], [after, after])
    assert all(np.array_equal(r.mask, out.mask) for r in batch)


def test_caption_cli_writes_the_mask(scc_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(1)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / name)
    mask = tmp_path / "out" / "mask.png"
    code = main(["caption", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--model", str(scc_dir),
                 "--device", "cpu", "--mask", str(mask)])  # fmt: skip
    assert code == 0 and mask.is_file()
    written = np.asarray(Image.open(mask))
    assert written.shape == (64, 64) and set(np.unique(written)) <= {0, 255}


def test_caption_mask_is_written_atomically_with_normal_permissions(scc_dir: Path, tmp_path: Path) -> None:
    Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    mask = tmp_path / "mask.png"
    (tmp_path / ".mask.png.tmp").symlink_to(victim)  # a predictable name beside the target
    old = os.umask(0o022)
    try:
        code = main(["caption", str(tmp_path / "a.png"), str(tmp_path / "a.png"), "--model", str(scc_dir),
                     "--device", "cpu", "--mask", str(mask)])  # fmt: skip
    finally:
        os.umask(old)
    assert code == 0 and victim.read_text() == "precious" and mask.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == [".mask.png.tmp", "a.png", "mask.png", "victim.txt"]


@pytest.mark.parametrize(
    ("target", "message"), [("a_folder", "is a folder"), ("a_file/m.png", "is a file, not a folder")]
)
def test_an_unusable_mask_path_is_refused_before_the_model_is_loaded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], target: str, message: str
) -> None:
    (tmp_path / "a_folder").mkdir()
    (tmp_path / "a_file").write_text("x")
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    code = main(["caption", str(tmp_path / "a.png"), str(tmp_path / "a.png"), "--model", str(tmp_path / "no-model"),
                 "--mask", str(tmp_path / target)])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and "[--mask]" in err and message in err and "\n" not in err


def test_mask_flag_on_a_model_without_cd_head_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from changecap.models.hisem import tiny_config

    vocab = Vocabulary.build([WORDS], threshold=0)
    hisem = build_model(tiny_config(len(vocab), image_size=32, patch_size=8, dim=32))
    folder = save_model(hisem, hisem.config, vocab, tmp_path / "hisem")
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    code = main(["caption", str(tmp_path / "a.png"), str(tmp_path / "a.png"), "--model", str(folder),
                 "--mask", str(tmp_path / "m.png")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: --mask") and "no change mask" in err and "\n" not in err


def test_evaluate_reports_change_detection_metrics(scc_dir: Path, tmp_path: Path) -> None:
    root = make_levir(tmp_path / "mci", "levir-mci", {"train": 2, "val": 2, "test": 4}, 64)
    ev = evaluate_model(scc_dir, root, "levir-mci", "test", out_dir=tmp_path / "eval", meteor="off", device="cpu",
                        progress=False)  # fmt: skip
    cd = ev.change_detection
    assert cd is not None and cd.f1.shape == (2,) and 0.0 <= cd.overall_accuracy <= 1.0
    report = (tmp_path / "eval" / "metrics_test.txt").read_text()
    assert "change detection" in report and "OA" in report
    assert "change_detection" in (tmp_path / "eval" / "metrics_test.json").read_text()
    assert set(ev.masks) == set(ev.predictions) and all(m.shape == (64, 64) for m in ev.masks.values())
    from changecap.inference import write_html_report

    page = write_html_report(tmp_path / "report.html", evaluation=ev, data_root=root, fmt="levir-mci", num_examples=2)
    text = page.read_text()
    assert "predicted change" in text and "Change detection" in text and text.count("<img") == 2 * 4
