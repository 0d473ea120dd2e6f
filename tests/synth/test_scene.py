"""Scene layout: determinism and ground-truth events that match the placed objects."""

from __future__ import annotations

import numpy as np
import pytest

from changecap.synth.geometry import grid_location
from changecap.synth.scene import RECIPES, plan_pair


def _changed_buildings(scene, state: str) -> list:
    return [b for b in scene.buildings if b.state == state]


def test_same_seed_same_scene_and_different_seed_differs() -> None:
    a, b, c = plan_pair(0, 5, True), plan_pair(0, 5, True), plan_pair(1, 5, True)
    assert a.events == b.events and a.recipe == b.recipe
    assert [(x.cx, x.cy) for x in a.buildings] == [(x.cx, x.cy) for x in b.buildings]
    assert [(x.cx, x.cy) for x in a.trees] != [(x.cx, x.cy) for x in c.trees]


def test_unchanged_scenes_have_no_events_and_no_changed_objects() -> None:
    for i in range(10):
        s = plan_pair(3, i, False)
        assert s.recipe == "none" and s.events == []
        objects = [*s.buildings, *s.trees, *s.roads, *s.ground, *s.lots]
        assert all(o.state == "static" for o in objects)


@pytest.mark.parametrize("index", range(40))
def test_events_match_placed_objects(index: int) -> None:
    s = plan_pair(7, index, True)
    assert s.recipe in RECIPES and s.events
    for ev in s.events:
        if ev["type"] == "building":
            state = "after" if ev["action"] == "appear" else "before"
            placed = _changed_buildings(s, state)
            assert ev["count"] == len(placed) >= 1
            centers = np.array([[b.cx, b.cy] for b in placed])
            # changed buildings lie fully inside the tile, so they can be counted
            corners = np.concatenate([b.corners() for b in placed])
            assert corners.min() >= 0 and corners.max() <= 1
            assert np.allclose(ev["centroid"], centers.mean(axis=0), atol=1e-3)
            if ev["location"] != "scene":
                assert ev["location"] == grid_location(*centers.mean(axis=0))
            else:
                assert min(ev["extent"]) > 0.6
        elif ev["type"] == "road":
            assert ev["count"] == sum(r.state == "after" for r in s.roads) >= 1
        elif ev["type"] == "vegetation":
            removed = [t for t in s.trees if t.state == "before" and 0 <= t.cx <= 1 and 0 <= t.cy <= 1]
            assert ev["count"] == len(removed) >= 3
        elif ev["type"] == "water":
            assert any(p.state == "after" for p in s.ground)
    # nothing else changes: buildings only change in building events
    types = {e["type"] for e in s.events}
    if "building" not in types:
        assert not any(b.state != "static" for b in s.buildings)
    if "road" not in types:
        assert not any(r.state != "static" for r in s.roads)
    if "vegetation" not in types:
        assert not any(t.state != "static" for t in s.trees)


def test_object_sizes_stay_in_their_documented_ranges() -> None:
    """Tree canopies at most 0.035 units (4.5 m) in radius; houses 13-18 m long; large buildings longer."""
    for i in range(30):
        s = plan_pair(2, i, i % 2 == 0)
        for t in s.trees:
            assert 0.005 < t.r <= 0.035, t
        for b in s.buildings:
            assert b.half_len >= b.half_wid > 0
            if b.kind == "house":
                assert 0.05 <= b.half_len <= 0.07 and 0.036 <= b.half_wid <= 0.05, b
            else:
                assert b.half_len >= 0.09, b


def test_every_recipe_has_a_placement_function() -> None:
    from changecap.synth.scene import _RECIPE_FUNCTIONS

    assert set(_RECIPE_FUNCTIONS) == set(RECIPES)
