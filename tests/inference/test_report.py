"""The HTML report with the training curves and the word-by-word attention view (HiSem, DFM), as written and as
headless chromium shows it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from changecap.engine.curves import write_curves
from changecap.errors import DataError
from changecap.inference import ChangeCaptioner, evaluate_model, write_html_report
from tests.browser import chromium
from tests.data.fakes import make_levir

#: a two-epoch training log, as a run writes it
LOG = [
    {"kind": "train", "step": 3, "epoch": 0, "loss": 3.2, "caption_ce": 3.1},
    {"kind": "val", "step": 3, "epoch": 0, "Bleu_4": 0.1, "CIDEr": 0.3, "best": True},
    {"kind": "train", "step": 6, "epoch": 1, "loss": 2.4, "caption_ce": 2.3},
    {"kind": "val", "step": 6, "epoch": 1, "Bleu_4": 0.2, "CIDEr": 0.5, "best": True},
]


@pytest.fixture(scope="module")
def curves(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("run")
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in LOG))
    path = write_curves(run, ["caption_ce"])
    assert path is not None
    return path


def report(model: Path, data_root: Path, out: Path, **kw: Any) -> str:
    ev = evaluate_model(model, data_root, "levir-mci", "test", meteor="off", progress=False)
    path = write_html_report(out, evaluation=ev, data_root=data_root, fmt="levir-mci", num_examples=4, **kw)
    return path.read_text()


@pytest.fixture(scope="module")
def reports(model_dir: Path, dfm_dir: Path, data_root: Path, curves: Path,
            tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:  # fmt: skip
    out = tmp_path_factory.mktemp("reports")
    for name, model in (("hisem", model_dir), ("dfm", dfm_dir)):
        report(model, data_root, out / f"{name}.html", curves=curves)
    return {name: out / f"{name}.html" for name in ("hisem", "dfm")}


@pytest.mark.parametrize("system", ["hisem", "dfm"])
def test_the_report_draws_the_curves_and_each_words_attention(
    system: str, reports: dict[str, Path], model_dir: Path, dfm_dir: Path, data_root: Path
) -> None:
    doc = reports[system].read_text()
    assert "<h2>Training curves</h2>" in doc and doc.count('class="changecap-curves"') == 1
    assert 'data-name="BLEU-4"' in doc and 'data-name="caption_ce"' in doc
    views = re.findall(r"while writing “([^”]*)”</summary><div class='words'>(.*?)</div>", doc)
    assert views, "no attention view"
    captioner = ChangeCaptioner.from_pretrained(model_dir if system == "hisem" else dfm_dir, device="cpu")
    for caption, figures in views:
        words = caption.split()
        assert figures.count('<figure class="word">') == len(words)
        assert [w for w in re.findall(r"<figcaption>(\S+) <span", figures)] == words
        assert figures.count("data:image/jpeg;base64,") == len(words)
    first = captioner(data_root / "images/test/A/test_000001.png", data_root / "images/test/B/test_000001.png")
    assert any(caption == first.caption for caption, _ in views)  # the model's own decoding, again


def test_no_attention_view_when_not_asked_for_or_not_declared(
    model_dir: Path, scc_dir: Path, data_root: Path, tmp_path: Path
) -> None:
    assert "while writing" not in report(model_dir, data_root, tmp_path / "off.html", attention=False)
    root = make_levir(tmp_path / "mci", "levir-mci", {"train": 1, "val": 1, "test": 2}, 64)
    masks = report(scc_dir, root, tmp_path / "scc.html")  # Semantic-CC declares no attention maps; it has masks
    assert "while writing" not in masks and "predicted change" in masks and "Training curves" not in masks


def test_an_unreadable_curves_file_is_a_one_line_error(model_dir: Path, data_root: Path, tmp_path: Path) -> None:
    (tmp_path / "curves.svg").write_text("not a picture")
    for path, message in ((tmp_path / "missing.svg", "cannot read the training curves"),
                          (tmp_path / "curves.svg", "is not an SVG image")):  # fmt: skip
        with pytest.raises(DataError, match=message) as e:
            report(model_dir, data_root, tmp_path / "r.html", curves=path, attention=False)
        assert str(path) in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "r.html").exists()


def test_chromium_shows_the_curves_and_the_attention_view(reports: dict[str, Path], tmp_path: Path) -> None:
    playwright_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs playwright (make env)")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        for system, path in reports.items():
            page.goto(path.as_uri())
            curves = page.locator("svg.changecap-curves")
            box = curves.bounding_box()
            assert box is not None and box["width"] > 300 and box["height"] > 300, system
            assert curves.locator("g.series circle").count() >= 2 * 4  # loss, caption_ce, BLEU-4, CIDEr-D
            images = page.locator(".attention .word img")
            assert images.count() > 0, system
            sizes = page.evaluate("""() => [...document.querySelectorAll('.attention .word img')]
                                     .map(i => [i.complete, i.naturalWidth, i.naturalHeight])""")
            assert all(s == [True, 128, 128] for s in sizes), (system, sizes[:3])  # every heat map decoded
            assert page.locator(".attention").first.is_visible()
            page.screenshot(path=str(tmp_path / f"{system}.png"), full_page=True)
        browser.close()
    assert all((tmp_path / f"{s}.png").stat().st_size > 10_000 for s in reports)
