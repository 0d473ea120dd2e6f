"""SynthCC in the SECOND-CC layout: the second-cc reader accepts it, pixels and captions are SynthCC's, and the
semantic maps carry the SECOND classes of exactly the changed land cover."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from changecap.cli.main import main
from changecap.data.annotations import parse_annotations
from changecap.data.check import check_dataset
from changecap.data.image_io import read_rgb
from changecap.data.semantic_maps import SECOND_CLASSES, read_change_mask, read_semantic_map
from changecap.synth import classes as C
from changecap.synth.second_cc import SECOND_OF_RENDER_CLASS, generate_second_cc, semantic_maps

PAIRS, SIZE = 16, 48


@pytest.fixture(scope="module")
def second_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_second_cc(tmp_path_factory.mktemp("second") / "set", pairs=PAIRS, size=SIZE, progress=False)


def test_every_renderer_class_has_a_second_class() -> None:
    drawn = [*range(C.CAR0 + C.N_CAR_COLORS), *range(C.ROOF0, C.N_CLASSES)]
    assert (SECOND_OF_RENDER_CLASS[drawn] < len(SECOND_CLASSES)).all()
    assert (SECOND_OF_RENDER_CLASS[drawn] > 0).all()  # 0 is "unchanged", never a land cover
    assert SECOND_OF_RENDER_CLASS[C.ROOF0] == SECOND_CLASSES.index("building")
    assert SECOND_OF_RENDER_CLASS[C.ROAD] == SECOND_CLASSES.index("ground")


def test_the_second_cc_reader_accepts_the_set(second_set: Path) -> None:
    report = check_dataset(second_set, "second-cc", deep=True, progress=False)
    assert report.pairs == PAIRS and report.image_sizes == {f"{SIZE}x{SIZE}": PAIRS}
    assert sum(s.with_masks for s in report.splits.values()) == PAIRS


def test_pixels_and_captions_are_the_levir_layouts(second_set: Path, tmp_path: Path) -> None:
    from changecap.synth import generate_synthcc

    levir = generate_synthcc(tmp_path / "levir", pairs=PAIRS, size=SIZE, progress=False)
    a = {r.name: r for r in parse_annotations(levir, "levir-mci")}
    b = {r.name: r for r in parse_annotations(second_set, "second-cc")}
    assert a.keys() == b.keys()
    for name, rec in b.items():
        assert rec.captions == a[name].captions and rec.changed == a[name].changed
        assert np.array_equal(read_rgb(rec.after_path), read_rgb(a[name].after_path))  # type: ignore[arg-type]


def test_maps_mark_only_changed_land_cover(second_set: Path) -> None:
    meta = {m["filename"]: m for m in json.loads((second_set / "synthcc_meta.json").read_text())["items"]}
    building = SECOND_CLASSES.index("building")
    new_building = 0
    for rec in parse_annotations(second_set, "second-cc"):
        assert rec.semantic_paths is not None
        before, after = (read_semantic_map(p) for p in rec.semantic_paths)
        mask = read_change_mask(rec)
        assert mask is not None and np.array_equal(mask, (before != after).astype(np.uint8))
        assert np.array_equal(before == 0, after == 0)  # classes only where the dates differ
        assert int(mask.sum()) == meta[rec.name]["changed_pixels"]
        if not rec.changed:
            assert not before.any() and not after.any()
        new_building += int((after == building).any() and (before != building).all())
    assert new_building  # some pair builds on land that had no building


def test_semantic_maps_are_deterministic() -> None:
    assert np.array_equal(semantic_maps(3, 5, True, 32), semantic_maps(3, 5, True, 32))


def test_cli_layout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "set"
    argv = ["synth", "--out", str(out), "--pairs", "3", "--size", "32", "--layout", "second-cc", "--no-progress"]
    assert main(argv) == 0
    assert "second-cc layout" in capsys.readouterr().out
    assert len(json.loads((out / "SECOND-CC-AUG.json").read_text())["images"]) == 3
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    assert main(["synth", "--out", str(tmp_path / "mine"), "--layout", "second-cc", "--pairs", "3"]) == 2
    assert "not a SynthCC set" in capsys.readouterr().err
    assert main(["synth", "--stats", str(out), "--layout", "second-cc"]) == 2
    assert "--layout applies to --out" in capsys.readouterr().err


def test_workers_write_the_same_files(tmp_path: Path) -> None:
    one = generate_second_cc(tmp_path / "one", pairs=4, size=32, progress=False)
    two = generate_second_cc(tmp_path / "two", pairs=4, size=32, workers=2, progress=False)
    files = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(two) for p in two.rglob("*") if p.is_file())
    assert all((one / f).read_bytes() == (two / f).read_bytes() for f in files)


def test_a_killed_runs_temporary_files_are_removed_and_a_planted_link_not_followed(tmp_path: Path) -> None:
    from changecap.data.files import is_temp_name
    from changecap.errors import DataError
    from tests.data.test_files import dead_pid

    out = generate_second_cc(tmp_path / "set", pairs=4, size=32, progress=False)
    stale = out / f".LevirCCcaptions.json.{dead_pid()}.k1ll3d.tmp"  # what a SIGKILL while writing it leaves
    stale.write_text("{")
    generate_second_cc(out, pairs=4, size=32, progress=False)
    assert not stale.exists() and not [p.name for p in out.iterdir() if is_temp_name(p.name)]
    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    (out / "LevirCCcaptions.json.tmp").symlink_to(victim)  # a predictable temporary name, planted
    with pytest.raises(DataError, match="not a SynthCC set"):
        generate_second_cc(out, pairs=4, size=32, progress=False)
    assert victim.read_text() == "mine"
