"""Scene captions of single images are true to what was rendered in them: building counts, roads, water, woods and
parking lots agree with the visible objects and the land-cover map of that image."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from changecap.data.single_date import read_landcover
from changecap.data.text import tokenize
from changecap.synth import classes as C
from changecap.synth.landcover import LANDCOVER_CLASSES, landcover_map
from changecap.synth.render import draw_classes, frame_for, make_fields
from changecap.synth.scene import LANDCOVER_OCTAVES, Building, Patch, Road, Scene, Tree, plan_pair, visible
from changecap.synth.scene_captions import (
    MAX_SCENE_WORDS,
    MIN_AREA_SHARE,
    Group,
    RoadNetwork,
    make_scene_captions,
    scene_facts,
    scene_record,
)
from tests.synth.test_captions import locations_in

_COUNTS = r"a few|lots of|several|some|many|a|one|two|three|four|five|six|seven|eight|nine|ten"
HOUSES = re.compile(rf"\b({_COUNTS}) (?:house|houses|villa|villas|building|buildings)\b")
LARGE = re.compile(rf"\b({_COUNTS}) (?:large|big) (?:building|buildings)\b")
WATER = re.compile(r"\b(?:pond|lake)\b")
ROAD = re.compile(r"\b(?:road|roads|crossroad)\b")
WOODS = re.compile(r"\b(?:woods|forest|dense trees)\b")
PARKING = re.compile(r"\bparking\b")
_NUMBERS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def count_range(word: str) -> tuple[float, float]:
    """The numbers a count word may stand for."""
    if word in ("a", "one"):
        return 1, 1
    if word in _NUMBERS:
        n = _NUMBERS.index(word) + 1
        return n, n
    if word in ("several", "some", "a few"):
        return 3, 5
    return 6, math.inf  # many, lots of


def counted(pattern: re.Pattern[str], caption: str) -> tuple[float, float]:
    """Sum of the count ranges of every noun phrase matched by ``pattern`` in a caption."""
    lo = hi = 0.0
    for m in pattern.finditer(caption):
        a, b = count_range(m.group(1))
        lo, hi = lo + a, hi + b
    return lo, hi


def visible_buildings(scene: Scene, date: str, shift: tuple[int, int], size: int, kind: str) -> int:
    """Buildings of ``kind`` in the image of ``date``: visible at that date, centre inside the image's own window."""
    n = 0
    for b in scene.buildings:
        x, y = b.cx * size - shift[0], b.cy * size - shift[1]
        n += visible(b.state, date) and b.kind == kind and 0 <= x < size and 0 <= y < size
    return n


# ---------------------------------------------------------------------------------------------------------- a scene
def _ring(cx: float, cy: float, r: float, n: int = 20) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + r * np.cos(t), cy + 0.8 * r * np.sin(t)], axis=1)


def _handmade_scene() -> Scene:
    """Six houses along a straight road at the bottom (and one more built in the after image), woods in the top
    left corner, a pond on the right, bare ground."""
    scene = Scene(
        landcover=[np.zeros((g + 1, g + 1), np.float32) for g, _ in LANDCOVER_OCTAVES],
        grass_level=1.0,  # the field is 0 everywhere: bare land
        shadow_angle=1.0,
        roof_colors=list(range(C.N_ROOF_SLOTS)),
    )
    scene.roads.append(Road(np.array([[-0.12, 0.85], [1.12, 0.85]]), 0.06))
    for x in np.linspace(0.12, 0.88, 6):
        scene.buildings.append(Building(float(x), 0.74, 0.06, 0.042, 0.0, "house", 1, 0.02))
    scene.buildings.append(Building(0.5, 0.5, 0.06, 0.042, 0.0, "house", 2, 0.02, state="after"))
    scene.ground.append(Patch(_ring(0.82, 0.45, 0.09), C.SHORE))
    scene.ground.append(Patch(_ring(0.82, 0.45, 0.08), C.WATER))
    scene.ground.append(Patch(_ring(0.17, 0.17, 0.14), C.FOREST_FLOOR))
    for x in np.arange(0.07, 0.28, 0.035):
        for y in np.arange(0.1, 0.25, 0.035):
            scene.trees.append(Tree(float(x), float(y), 0.02))
    return scene


def _landcover(scene: Scene, date: str, size: int = 96) -> np.ndarray:
    frame = frame_for(size)
    classes, _ = draw_classes(scene, date, frame, make_fields(scene, np.random.default_rng(0), frame), 1.0, 1.0)
    m = frame.margin
    return landcover_map(classes[m : m + size, m : m + size])


def test_facts_of_a_handmade_scene() -> None:
    scene = _handmade_scene()
    facts = scene_facts(scene, "A", _landcover(scene, "A"), (0, 0))
    assert facts.houses == (Group(6, "bottom", along_road=True),)
    assert facts.roads == RoadNetwork("straight", 1, "bottom", "horizontal")
    assert [(a.kind, a.location) for a in facts.water] == [("pond", "right")]
    assert [a.location for a in facts.woods] == ["top-left"]
    assert facts.large is None and facts.parking == () and facts.soil is None
    assert facts.ground == "bareland" and facts.trees == 0  # the trees stand in the woods
    after = scene_facts(scene, "B", _landcover(scene, "B"), (0, 0))
    assert sum(g.count for g in after.houses) == 7  # the house built in the after image
    assert facts.object_counts() == {
        "houses": 6,
        "large_buildings": 0,
        "roads": 1,
        "woods": 1,
        "water_bodies": 1,
        "parking_lots": 0,
        "scattered_trees": 0,
    }


def test_count_in_each_images_own_frame() -> None:
    """A house whose centre lies just inside the before image is outside an after image shifted to the right."""
    scene = _handmade_scene()
    scene.buildings.append(Building(0.005, 0.3, 0.06, 0.042, 0.0, "house", 1, 0.02))
    lc = _landcover(scene, "A")
    assert sum(g.count for g in scene_facts(scene, "A", lc, (0, 0)).houses) == 7
    assert sum(g.count for g in scene_facts(scene, "A", lc, (2, 0)).houses) == 6


def test_captions_of_a_handmade_scene() -> None:
    scene = _handmade_scene()
    facts = scene_facts(scene, "A", _landcover(scene, "A"), (0, 0))
    caps = make_scene_captions(facts, np.random.default_rng(0))
    assert len(caps) == 5 and len(set(caps)) == 5
    for c in caps:
        assert counted(HOUSES, c) in ((6, 6), (6, math.inf)), c
        assert re.search(r"\b(?:along|beside|by) (?:a|the) (?:straight )?road\b", c), c
        assert WATER.search(c) and WOODS.search(c) and not PARKING.search(c), c
        assert locations_in(c) <= {"bottom", "right", "top-left"}, c
    assert set().union(*(locations_in(c) for c in caps)) == {"bottom", "right", "top-left"}


def test_same_stream_same_captions() -> None:
    scene = _handmade_scene()
    lc = _landcover(scene, "A")
    a = scene_record(scene, "A", lc, (0, 0), np.random.default_rng([3, 1, 2]))
    b = scene_record(scene, "A", lc, (0, 0), np.random.default_rng([3, 1, 2]))
    c = scene_record(scene, "A", lc, (0, 0), np.random.default_rng([3, 1, 3]))
    assert a == b and a["sentences"] != c["sentences"] and a["objects"] == c["objects"]
    assert a["landcover_pixels"] == [int((lc == k).sum()) for k in range(len(LANDCOVER_CLASSES))]


# ---------------------------------------------------------------------------------------------------------- the set
@pytest.fixture(scope="module")
def described(tiny_set: Path, tiny_meta: dict[str, Any]) -> list[dict[str, Any]]:
    """Every image of the tiny set with its record, land-cover map, scene and window shift."""
    doc = json.loads((tiny_set / "scene_captions.json").read_text())
    out = []
    for rec in doc["images"]:
        item = next(it for it in tiny_meta["items"] if it["filename"] == rec["filename"])
        shift = tuple(item["nuisance"]["before" if rec["date"] == "A" else "after"]["shift"])
        lc = read_landcover(
            tiny_set / "images" / rec["split"] / "landcover" / rec["date"] / rec["filename"], len(LANDCOVER_CLASSES)
        )
        scene = plan_pair(tiny_meta["seed"], item["imgid"], item["changed"])
        out.append({"rec": rec, "lc": lc, "scene": scene, "shift": shift})
    return out


def test_building_counts_match_the_visible_buildings(described: list[dict[str, Any]]) -> None:
    seen_many = False
    for d in described:
        rec, size = d["rec"], d["lc"].shape[0]
        houses = visible_buildings(d["scene"], rec["date"], d["shift"], size, "house")
        large = visible_buildings(d["scene"], rec["date"], d["shift"], size, "large")
        assert rec["objects"]["houses"] == houses and rec["objects"]["large_buildings"] == large
        seen_many |= houses >= 6
        for c in rec["sentences"]:
            lo, hi = counted(HOUSES, c)
            assert lo <= houses <= hi, (c, houses)
            lo, hi = counted(LARGE, c)
            assert lo <= large <= hi, (c, large)
    assert seen_many


def test_water_roads_woods_and_parking_are_named_as_the_map_shows_them(described: list[dict[str, Any]]) -> None:
    named: dict[str, int] = {"water": 0, "road": 0, "woods": 0, "parking": 0}
    for d in described:
        lc, sentences = d["lc"], d["rec"]["sentences"]
        least = MIN_AREA_SHARE * lc.size
        px = {
            name: int((lc == LANDCOVER_CLASSES.index(cls)).sum())
            for name, cls in [("water", "water"), ("road", "road"), ("woods", "trees"), ("parking", "parking")]
        }
        for name, pattern, surely in (
            ("water", WATER, 4 * least),
            ("road", ROAD, 0.04 * lc.size),
            ("woods", WOODS, math.inf),  # scattered trees are trees pixels too: only "named => trees shown"
            ("parking", PARKING, 3 * least),
        ):
            mentions = {bool(pattern.search(c)) for c in sentences}
            assert len(mentions) == 1, (name, sentences)  # every paraphrase names it, or none does
            if mentions.pop():
                named[name] += 1
                assert px[name] >= least, (name, px[name], sentences)
            else:
                assert px[name] < surely, (name, px[name], sentences)
    assert all(n > 0 for n in named.values()), named


def test_captions_are_lower_case_short_distinct_and_tokenisable(described: list[dict[str, Any]]) -> None:
    words: set[str] = set()
    for d in described:
        caps = d["rec"]["sentences"]
        assert len(caps) == 5
        assert len(set(caps)) >= 4, caps
        for c in caps:
            assert c == c.lower() and c == c.strip() and "  " not in c and not c.endswith(".")
            tokens = tokenize(c)
            assert 1 <= len(tokens) <= MAX_SCENE_WORDS and "." not in c and "?" not in c
            if "the road" in c:  # a road is named before a phrase refers to it
                assert re.search(r"\b(?:a|two) (?:[\w-]+ )?(?:road|roads|crossroad)\b", c.split("the road")[0]), c
            words.update(tokens)
    assert 40 <= len(words) <= 200
