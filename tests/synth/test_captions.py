"""Captions are true to the ground-truth events: count words, location phrases, appear vs disappear."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest

from changecap.data.text import NO_CHANGE_SENTENCES
from changecap.synth.captions import LOCATION_PHRASES, MAX_WORDS, count_class, make_captions
from changecap.synth.scene import plan_pair

BUILDING_NOUNS = r"(?:large |big )?(?:house|building|villa)s?"
COUNT_PATTERNS = {
    "one": rf"\ba (?:new )?{BUILDING_NOUNS}\b|\bthere is a new {BUILDING_NOUNS}\b",
    "two": rf"\btwo {BUILDING_NOUNS}\b",
    "few": rf"\b(?:several|some|a few) {BUILDING_NOUNS}\b",
    "many": rf"\b(?:many|lots of) {BUILDING_NOUNS}\b",
}
_PHRASES = sorted(((p, loc) for loc, ps in LOCATION_PHRASES.items() for p in ps), key=lambda t: -len(t[0]))


def locations_in(caption: str) -> set[str]:
    """Location names whose phrases occur in the caption (longest phrase first, so "at the top left corner" is
    not also read as "at the top")."""
    found: set[str] = set()
    text = f" {caption} "
    for phrase, loc in _PHRASES:
        if f" {phrase} " in text:
            found.add(loc)
            text = text.replace(f" {phrase} ", " | ")
    return found


def building_event(count: int, location: str, action: str = "appear", **extra: Any) -> dict[str, Any]:
    ev = {
        "type": "building",
        "action": action,
        "count": count,
        "kind": "house",
        "location": location,
        "centroid": [0.5, 0.5],
        "extent": [0.1, 0.1],
        "surface": None,
        "along_road": False,
        "both_sides": False,
        "new_road": False,
    }
    ev.update(extra)
    return ev


@pytest.mark.parametrize(("count", "cls"), [(1, "one"), (2, "two"), (3, "few"), (5, "few"), (6, "many"), (14, "many")])
def test_count_class(count: int, cls: str) -> None:
    assert count_class(count) == cls


@pytest.mark.parametrize("count", [1, 2, 4, 9])
@pytest.mark.parametrize("location", ["top-left", "center", "bottom", "right"])
def test_single_building_appear_uses_right_count_and_location(count: int, location: str) -> None:
    for seed in range(6):
        caps = make_captions([building_event(count, location, surface="bareland")], np.random.default_rng(seed))
        assert len(caps) == 5 and len(set(caps)) == 5
        for c in caps:
            cls = count_class(count)
            assert re.search(COUNT_PATTERNS[cls], c), c
            for other, pattern in COUNT_PATTERNS.items():
                if other != cls:
                    assert not re.search(pattern, c), c
            assert locations_in(c) <= {location}, c
            assert not re.search(r"disappear|demolish|removed|torn", c), c
            assert "grass" not in c and "meadow" not in c


def test_disappear_events_use_disappear_verbs() -> None:
    caps = make_captions([building_event(2, "top", action="disappear")], np.random.default_rng(0))
    for c in caps:
        assert re.search(r"disappear|demolished|removed|torn down", c), c
        assert not re.search(r"\b(appear|appears|built|constructed|emerge)\b", c), c
        assert "two " in c


def test_unchanged_pairs_get_the_five_levir_sentences() -> None:
    assert make_captions([], np.random.default_rng(0)) == list(NO_CHANGE_SENTENCES)


def test_captions_of_planned_scenes_are_true_short_and_compact() -> None:
    """Over many random scenes: count words and location phrases match the events, <= MAX_WORDS words, and the
    vocabulary stays small."""
    words: set[str] = set()
    for i in range(150):
        scene = plan_pair(11, i, True)
        caps = make_captions(scene.events, np.random.default_rng(i))
        allowed = {e["location"] for e in scene.events}
        if any(e.get("across") for e in scene.events):
            allowed.add("scene")  # "a road is built across the scene"
        buildings = [e for e in scene.events if e["type"] == "building"]
        for c in caps:
            assert 1 <= len(c.split()) <= MAX_WORDS, c
            assert c == c.lower() and "." not in c
            assert locations_in(c) <= allowed, (c, scene.events)
            if buildings:
                cls = count_class(buildings[0]["count"])
                found = {k for k, p in COUNT_PATTERNS.items() if re.search(p, c)}
                assert found <= {cls}, (c, buildings[0])
            words.update(c.split())
    assert 60 <= len(words) <= 300
