"""``audit_dataset`` on SynthCC with planted label errors of every kind, on caption-only data and other formats."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from changecap.data.audit import CHECKS, AuditOptions, AuditReport, audit_dataset
from changecap.data.image_io import read_mask, read_rgb
from changecap.data.text import NO_CHANGE_SENTENCES
from changecap.errors import ConfigError, DataError
from changecap.synth import generate_synthcc
from tests.conftest import require_shared
from tests.data.fakes import make_dubai, make_levir, make_levir_cd, make_second_cc, make_tokens


@pytest.fixture(scope="module")
def clean_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SynthCC ``tiny`` (60 pairs of 64 px, seed 0): the clean reference."""
    return generate_synthcc(tmp_path_factory.mktemp("audit") / "clean", preset="tiny", seed=0, progress=False)


@pytest.fixture(scope="module")
def clean_report(clean_set: Path) -> AuditReport:
    return audit_dataset(clean_set, "levir-mci", progress=False)


def _keys(report: AuditReport) -> set[tuple[str, str, str]]:
    return {(f.check, f.split, f.name) for f in report.findings}


class Planter:
    """Edits a copy of a SynthCC set and records which pair should be flagged by which check."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.doc = json.loads((root / "LevirCCcaptions.json").read_text())
        self.meta = {
            (m["split"], m["filename"]): m for m in json.loads((root / "synthcc_meta.json").read_text())["items"]
        }
        self.expected: dict[tuple[str, str], set[str]] = {}

    def entry(self, split: str, name: str) -> dict[str, Any]:
        return next(e for e in self.doc["images"] if e["split"] == split and e["filename"] == name)

    def pick(self, split: str, want: Callable[[dict[str, Any]], bool]) -> tuple[str, str]:
        """The first pair of ``split`` satisfying ``want(meta item)`` that has no planted error yet."""
        for (s, name), m in self.meta.items():
            if s == split and (s, name) not in self.expected and want(m):
                return s, name
        raise AssertionError(f"the tiny SynthCC set has no free pair of that kind in {split}")

    def expect(self, key: tuple[str, str], *checks: str) -> None:
        self.expected.setdefault(key, set()).update(checks)

    def path(self, key: tuple[str, str], sub: str) -> Path:
        return self.root / "images" / key[0] / sub / key[1]

    def set_captions(self, key: tuple[str, str], captions: list[str]) -> None:
        self.entry(*key)["sentences"] = [{"raw": f" {c} ."} for c in captions]

    def captions(self, key: tuple[str, str]) -> list[str]:
        return [s["raw"].strip(" .") for s in self.entry(*key)["sentences"]]

    def save(self) -> None:
        (self.root / "LevirCCcaptions.json").write_text(json.dumps(self.doc))


def _buildings_only(m: dict[str, Any]) -> bool:
    return m["changed"] and m["recipe"] in ("build", "demolish") and m["mask_pixels"]["building"] > 0


def _unchanged(m: dict[str, Any]) -> bool:
    return not m["changed"]


def _in_one_third(mask: np.ndarray) -> str | None:
    """``"top"`` / ``"bottom"`` when every changed pixel lies in that third of the mask."""
    rows = np.flatnonzero((mask > 0).any(1))
    h = mask.shape[0]
    if rows.size and rows[0] >= 2 * h / 3:
        return "bottom"
    if rows.size and rows[-1] + 1 <= h / 3:
        return "top"
    return None


def _plant_everything(root: Path) -> Planter:
    p = Planter(root)
    # (a) flags vs captions
    k = p.pick("test", _buildings_only)
    p.entry(*k)["changeflag"] = 0
    p.expect(k, "flag_unchanged_change_captions", "mask_in_unchanged_pair")
    k = p.pick("val", _unchanged)
    p.entry(*k)["changeflag"] = 1
    p.expect(k, "flag_changed_no_change_captions")
    k = p.pick("test", lambda m: m["changed"])
    p.set_captions(k, list(NO_CHANGE_SENTENCES))
    p.expect(k, "flag_changed_no_change_captions")
    k = p.pick("val", lambda m: m["changed"])
    p.set_captions(k, p.captions(k)[:3] + list(NO_CHANGE_SENTENCES[:2]))
    p.expect(k, "mixed_captions")
    # (b) flags vs masks
    k = p.pick("train", _buildings_only)
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(p.path(k, "label"))
    p.expect(k, "empty_mask_changed_pair")
    k = p.pick("train", _unchanged)
    label = np.zeros((64, 64, 3), np.uint8)
    label[10:20, 30:40] = 255
    Image.fromarray(label).save(p.path(k, "label"))
    p.expect(k, "mask_in_unchanged_pair")
    # (c) the after image replaced by the before image, re-lit and moved by a pixel
    k = p.pick("train", lambda m: m["changed"])
    before = read_rgb(p.path(k, "A")).astype(np.float32)
    relit = np.clip(np.roll(before, (1, -1), axis=(0, 1)) * np.array([0.92, 0.95, 0.9]) + 6, 0, 255)
    Image.fromarray(relit.astype(np.uint8)).save(p.path(k, "B"))
    p.expect(k, "identical_changed_pair")
    # (d) a train pair copied into test (exact), another into val re-lit (near-duplicate)
    for split, relight in (("test", False), ("val", True)):
        src = p.pick("train", lambda m: m["changed"])
        dst = p.pick(split, lambda m: not m["changed"])
        for side in ("A", "B"):
            img = read_rgb(p.path(src, side))
            if relight:
                img = np.clip(img.astype(np.float32) * 1.08 - 5, 0, 255).astype(np.uint8)
            Image.fromarray(img).save(p.path(dst, side))
        p.expect(dst, "duplicate_across_splits")
        p.expected.setdefault(src, set())  # the source keeps its own (clean) findings
    # (e) a location word swapped: the caption now names the third opposite to every changed pixel
    for split in ("train", "val", "test"):
        cand = [
            (key, side)
            for key, m in p.meta.items()
            if key[0] == split and key not in p.expected and _buildings_only(m)
            for side in [_in_one_third(read_mask(p.path(key, "label")))]
            if side
        ]
        if cand:
            break
    assert cand, "no pair of the tiny set has its change in one third"
    k, side = cand[0]
    other = {"top": "bottom", "bottom": "top"}[side]
    p.set_captions(k, [f"a house is built at the {other}"] + p.captions(k)[1:])
    p.expect(k, "spatial_mismatch")
    # (f) text: garbled, empty, outlier length, an out-of-vocabulary word, a train-only typo; an unreadable file
    k = p.pick("test", lambda m: m["changed"])
    p.set_captions(k, p.captions(k)[:4] + ["a h0use is is built"])
    p.expect(k, "garbled_caption")
    k = p.pick("val", lambda m: m["changed"])
    p.entry(*k)["sentences"][2] = {"raw": " . "}
    p.expect(k, "empty_caption")
    k = p.pick("test", lambda m: m["changed"])
    p.set_captions(k, p.captions(k)[:4] + [" and ".join(["a house is built on the left"] * 6)])
    p.expect(k, "length_outlier")
    k = p.pick("test", _unchanged)
    p.set_captions(k, p.captions(k)[:4] + ["a zeppelin appears"])
    p.expect(k, "oov_words", "mixed_captions")
    k = p.pick("train", lambda m: m["changed"])
    p.entry(*k)["sentences"].append({"raw": " a hosue is built ."})
    p.expect(k, "rare_words")
    k = p.pick("val", lambda m: m["changed"])
    p.path(k, "B").write_bytes(p.path(k, "B").read_bytes()[:60])
    p.expect(k, "unreadable_pair")
    p.save()
    return p


def test_clean_synthcc_has_no_label_error(clean_report: AuditReport) -> None:
    # Vocabulary findings on 60 pairs are true statements (a few words are used by val/test only), not errors.
    assert {f.severity for f in clean_report.findings} <= {"info"}
    assert {f.check for f in clean_report.findings} <= {"oov_words", "rare_words"}
    assert clean_report.skipped == {}
    # Vegetation / water changes have empty road / building masks: counted, explained, not findings.
    note = clean_report.notes["empty_mask_changed_pair"]
    meta = json.loads((Path(clean_report.root) / "synthcc_meta.json").read_text())["items"]
    empty = [m for m in meta if m["changed"] and not any(m["mask_pixels"].values())]
    assert note["count"] == len(empty) > 0
    assert all({e["type"] for e in m["events"]} <= {"vegetation", "water"} for m in empty)


def test_every_planted_error_is_found_and_nothing_else(
    clean_set: Path, clean_report: AuditReport, tmp_path: Path
) -> None:
    root = shutil.copytree(clean_set, tmp_path / "planted")
    planter = _plant_everything(root)
    report = audit_dataset(root, "levir-mci", progress=False)
    found: dict[tuple[str, str], set[str]] = {}
    for f in report.findings:
        found.setdefault((f.split, f.name), set()).add(f.check)
    planted_checks = set().union(*planter.expected.values())
    assert planted_checks >= {c.name for c in CHECKS} - {"duplicate_within_split"}  # every kind is planted
    for key, checks in planter.expected.items():
        assert checks <= found.get(key, set()), (key, checks, found.get(key))
    # The untouched pairs are reported exactly as in the clean set.
    untouched = {k for k in _keys(report) if (k[1], k[2]) not in planter.expected}
    clean = {k for k in _keys(clean_report) if (k[1], k[2]) not in planter.expected}
    assert untouched == clean
    dup = next(f for f in report.findings if f.check == "duplicate_across_splits" and f.split == "test")
    assert dup.extra["exact"] is True and dup.extra["other_split"] == "train"
    near = next(f for f in report.findings if f.check == "duplicate_across_splits" and f.split == "val")
    assert near.extra["exact"] is False and near.extra["residual"] <= AuditOptions().duplicate_below


def test_duplicates_within_a_split(clean_set: Path, tmp_path: Path) -> None:
    root = shutil.copytree(clean_set, tmp_path / "dup")
    for side in ("A", "B"):
        shutil.copyfile(
            root / "images/train" / side / "train_000003.png", root / "images/train" / side / "train_000009.png"
        )
    report = audit_dataset(root, "levir-mci", progress=False)
    dups = [f for f in report.findings if f.check.startswith("duplicate")]
    assert [(f.check, f.name, f.extra["other_name"]) for f in dups] == [
        ("duplicate_within_split", "train_000009.png", "train_000003.png")
    ]


def test_thresholds_are_options(clean_set: Path) -> None:
    strict = audit_dataset(clean_set, "levir-mci", options=AuditOptions(identical_below=255.0), progress=False)
    changed = sum(r.changed for r in strict.records.values())
    assert strict.counts["identical_changed_pair"] == changed  # every changed pair scores below 255
    big = audit_dataset(clean_set, "levir-mci", options=AuditOptions(min_changed_pixels=10**6), progress=False)
    assert big.counts["empty_mask_changed_pair"] > 0 and big.counts["mask_in_unchanged_pair"] == 0
    short = audit_dataset(clean_set, "levir-mci", options=AuditOptions(max_words=5), progress=False)
    assert all(f.extra["words"] > 5 for f in short.findings if f.check == "length_outlier")
    assert short.counts["length_outlier"] > 0
    with pytest.raises(ConfigError, match="hash-bits"):
        AuditOptions(hash_bits=65).validate()
    with pytest.raises(ConfigError, match="min-changed-pixels"):
        AuditOptions(min_changed_pixels=0).validate()
    with pytest.raises(ConfigError, match="workers"):
        audit_dataset(clean_set, "levir-mci", workers=0)


def test_two_workers_give_the_same_report(clean_set: Path, clean_report: AuditReport) -> None:
    report = audit_dataset(clean_set, "levir-mci", workers=2, progress=False)
    assert [f.to_dict() for f in report.findings] == [f.to_dict() for f in clean_report.findings]


def test_caption_only_data_says_image_checks_were_skipped(tmp_path: Path) -> None:
    root = make_tokens(tmp_path / "tok", pairs={"train": 4, "val": 2, "test": 2})
    report = audit_dataset(root, "tokens", progress=False)
    image_checks = {c.name for c in CHECKS if c.needs in ("images", "masks", "files")}
    assert set(report.skipped) == image_checks
    assert "caption files only" in report.skipped["duplicate_across_splits"]
    assert "no change masks" in report.skipped["spatial_mismatch"]
    data = report.to_dict()
    assert data["checks"]["identical_changed_pair"]["status"] == "skipped"
    assert "count" not in data["checks"]["identical_changed_pair"]
    assert data["checks"]["mixed_captions"] == {**data["checks"]["mixed_captions"], "status": "run", "count": 0}
    # A captions JSON whose image folders are absent: the same, with the reason given.
    levir = make_levir(tmp_path / "levir", pairs={"train": 2, "val": 1, "test": 1}, size=8)
    shutil.rmtree(levir / "images")
    report = audit_dataset(levir, "levir-cc", progress=False)
    assert "none of the listed image files exists" in report.skipped["identical_changed_pair"]
    assert "unreadable_pair" in report.skipped


def test_missing_images_of_some_pairs_are_findings(tmp_path: Path) -> None:
    root = make_levir(tmp_path / "ds", "levir-mci", pairs={"train": 2, "val": 2, "test": 2}, size=16)
    (root / "images/val/B/val_000002.png").unlink()
    report = audit_dataset(root, "levir-mci", progress=False)
    bad = [f for f in report.findings if f.check == "unreadable_pair"]
    assert [(f.split, f.name) for f in bad] == [("val", "val_000002.png")]
    assert "not found" in bad[0].detail


def test_other_formats(tmp_path: Path) -> None:
    dubai = make_dubai(tmp_path / "dubai", pairs={"train": 4, "val": 2, "test": 2}, tile=50)
    report = audit_dataset(dubai, "dubai-cc", progress=False)
    assert report.pairs_with_images == 8 and "identical_changed_pair" not in report.skipped
    assert "spatial_mismatch" in report.skipped  # Dubai-CC has no masks
    shutil.rmtree(next(dubai.rglob("imgs_tiles")))  # the captions alone
    report = audit_dataset(dubai, "dubai-cc", progress=False)
    assert report.skipped["identical_changed_pair"] == "no images: caption files only"
    cd = make_levir_cd(tmp_path / "cd", n=4, size=16)
    report = audit_dataset(cd, "levir-cd", progress=False)
    assert "no captions" in report.skipped["mixed_captions"] and "mask_in_unchanged_pair" not in report.skipped


def _plant_second_cc(root: Path) -> dict[tuple[str, str], str]:
    """Edit the semantic maps of a ``make_second_cc`` set (16 px; even pairs changed, top-left 3 → 5 and bottom-right
    2 → 1); return the check each edited pair must be flagged by."""
    from changecap.data.semantic_maps import SECOND_PALETTE

    def sem(split: str, side: str, name: str) -> Path:
        return root / split / "sem" / side / name

    def read(path: Path) -> np.ndarray:
        return np.asarray(Image.open(path).convert("RGB")).copy()

    # A changed pair whose two maps are the same: its change mask is empty.
    shutil.copyfile(sem("train", "A", "00000.png"), sem("train", "B", "00000.png"))
    # An unchanged pair whose maps differ on a 4 × 4 block (ground is now building).
    after = read(sem("train", "B", "00001.png"))
    after[8:12, 4:8] = SECOND_PALETTE[5]
    Image.fromarray(after).save(sem("train", "B", "00001.png"))
    # A changed pair whose maps now differ in the bottom-right corner only, captioned "on the left side".
    after = read(sem("val", "B", "00004.png"))
    after[:4, :4] = SECOND_PALETTE[3]
    Image.fromarray(after).save(sem("val", "B", "00004.png"))
    # A map with a colour that is no SECOND class.
    after = read(sem("test", "B", "00007.png"))
    after[0, 0] = (1, 2, 3)
    Image.fromarray(after).save(sem("test", "B", "00007.png"))
    return {
        ("train", "00000.png"): "empty_mask_changed_pair",
        ("train", "00001.png"): "mask_in_unchanged_pair",
        ("val", "00004.png"): "spatial_mismatch",
        ("test", "00007.png"): "unreadable_pair",
    }


def test_second_cc_masks_are_where_the_semantic_maps_differ(tmp_path: Path) -> None:
    root = make_second_cc(tmp_path / "second", pairs={"train": 4, "val": 2, "test": 2}, size=16)
    clean = audit_dataset(root, "second-cc", progress=False)
    assert clean.findings == [] and clean.skipped == {} and clean.pairs_with_masks == 8
    planted = _plant_second_cc(root)
    report = audit_dataset(root, "second-cc", workers=2, progress=False)  # the mask sources travel to 2 processes
    assert {(f.split, f.name): f.check for f in report.findings} == planted  # each planted error, nothing else
    by_check = {f.check: f for f in report.findings}
    empty, unchanged = by_check["empty_mask_changed_pair"], by_check["mask_in_unchanged_pair"]
    assert "the masks of this format show every change" in empty.detail
    assert "the two semantic maps differ at 0 pixels" in empty.detail
    assert "the two semantic maps differ at 16 pixels" in unchanged.detail and unchanged.extra["mask_pixels"] == 16
    assert not any(word in f.detail for f in report.findings for word in ("road", "building"))  # no class names
    assert "every changed pixel lies in" in by_check["spatial_mismatch"].detail
    unreadable = by_check["unreadable_pair"].detail
    assert "sem/B/00007.png" in unreadable and "not SECOND classes" in unreadable
    assert [f.to_dict() for f in audit_dataset(root, "second-cc", progress=False).findings] == [
        f.to_dict() for f in report.findings
    ]
    shutil.rmtree(root / "train" / "sem")  # the maps of one split gone: read errors, the others still checked
    report = audit_dataset(root, "second-cc", progress=False)
    assert {f.name for f in report.findings if f.check == "unreadable_pair"} >= {"00000.png", "00003.png"}
    for split in ("val", "test"):
        shutil.rmtree(root / split / "sem")
    report = audit_dataset(root, "second-cc", progress=False)
    assert report.skipped["mask_in_unchanged_pair"] == (
        "no change masks: none of the semantic maps (sem/A, sem/B) exists"
    )


def test_bad_inputs_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="dataset root not found"):
        audit_dataset(tmp_path / "nope", "levir-cc")
    with pytest.raises(ConfigError, match="unknown dataset format"):
        audit_dataset(tmp_path, "levir-xx")


@pytest.mark.shared
def test_real_levir_cc_captions() -> None:
    root = require_shared("levir-cc-tokens")
    report = audit_dataset(root, "tokens", progress=False)
    assert sum(report.pairs.values()) == 10077
    assert "caption files only" in report.skipped["duplicate_across_splits"]
    # Every unchanged LEVIR-CC pair carries exactly the five no-change sentences (tests/data/test_shared_data.py).
    assert report.counts["mixed_captions"] == 0
    garbled = {f.name for f in report.findings if f.check == "garbled_caption"}
    assert {"train_002013.png", "val_001410.png", "test_000484.png"} <= garbled  # "on on", "along1side", "a\\almost"
