"""Five LEVIR-CC-style reference captions per pair, generated from the ground-truth change events.

Every caption must be true of the events (see ``scene.py``): the count word follows the number of changed objects
(1 → "a", 2 → "two", 3-5 → "several / some / a few", 6 or more → "many / lots of"), the location phrase names the
3x3 grid cell of the changed objects' centroid (or "across the scene" when they spread over the tile), the verb says
appear vs disappear, and a surface ("on the bareland") is mentioned only when every changed object stands on it in
the before image. Captions may leave the location or the surface out (annotators do), never get them wrong.

Variety comes from synonyms and sentence patterns, drawn from the pair's own random stream; the vocabulary stays
small (about 150 words) and the count/location phrases are shared by all object types so a small model can learn
them. Unchanged pairs get exactly the five LEVIR-CC no-change sentences.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from changecap.data.text import NO_CHANGE_SENTENCES

MAX_WORDS = 25
N_CAPTIONS = 5

COUNT_WORDS: dict[str, tuple[str, ...]] = {
    "one": ("a",),
    "two": ("two",),
    "few": ("several", "some", "a few"),
    "many": ("many", "lots of"),
}
LOCATION_PHRASES: dict[str, tuple[str, ...]] = {
    "top-left": (
        "in the top left corner",
        "at the top left corner",
        "in the upper left corner",
        "at the top left of the scene",
    ),
    "top": ("at the top", "in the upper part", "at the top of the scene", "in the upper part of the scene"),
    "top-right": (
        "in the top right corner",
        "at the top right corner",
        "in the upper right corner",
        "at the top right of the scene",
    ),
    "left": ("on the left", "on the left side", "in the left part of the scene", "on the left side of the scene"),
    "center": ("in the center", "in the middle", "in the center of the scene", "in the middle of the scene"),
    "right": ("on the right", "on the right side", "in the right part of the scene", "on the right side of the scene"),
    "bottom-left": (
        "in the bottom left corner",
        "at the bottom left corner",
        "in the lower left corner",
        "at the bottom left of the scene",
    ),
    "bottom": ("at the bottom", "in the lower part", "at the bottom of the scene", "in the lower part of the scene"),
    "bottom-right": (
        "in the bottom right corner",
        "at the bottom right corner",
        "in the lower right corner",
        "at the bottom right of the scene",
    ),
    "scene": ("across the scene", "all over the scene", "throughout the scene"),
}
SURFACE_PHRASES: dict[str, tuple[str, ...]] = {
    "bareland": ("on the bareland", "on the bare land", "on the empty land"),
    "grass": ("on the grassland", "on the grass", "on the meadow"),
}
SURFACE_NOUNS: dict[str, tuple[str, ...]] = {
    "bareland": ("the bareland", "the bare land", "the empty land"),
    "grass": ("the grassland", "the meadow"),
}
BUILDING_NOUNS: dict[str, tuple[tuple[str, str], ...]] = {  # (singular, plural)
    "house": (("house", "houses"), ("building", "buildings"), ("villa", "villas")),
    "large": (("large building", "large buildings"), ("big building", "big buildings")),
}
# (singular, plural) verb phrases
APPEAR_VERBS: tuple[tuple[str, str], ...] = (
    ("appears", "appear"),
    ("is built", "are built"),
    ("is constructed", "are constructed"),
    ("emerges", "emerge"),
    ("has been built", "have been built"),
    ("shows up", "show up"),
)
DISAPPEAR_VERBS: tuple[tuple[str, str], ...] = (
    ("disappears", "disappear"),
    ("is demolished", "are demolished"),
    ("is removed", "are removed"),
    ("has been demolished", "have been demolished"),
    ("is torn down", "are torn down"),
)
ROAD_VERBS: tuple[tuple[str, str], ...] = (
    ("is built", "are built"),
    ("is constructed", "are constructed"),
    ("appears", "appear"),
    ("has been built", "have been built"),
)
ROAD_NOUNS: dict[str, tuple[tuple[str, bool], ...]] = {  # (phrase, plural)
    "straight": (("a road", False), ("a new road", False), ("a straight road", False)),
    "curved": (("a curved road", False), ("a winding road", False), ("a new curved road", False)),
    "t-shaped": (("a t-shaped road", False), ("a new t-shaped road", False)),
    "crossroad": (("two crossing roads", True), ("a crossroad", False), ("two new roads", True)),
    "branch": (("a new road", False), ("a branch road", False)),
}
TREE_VERBS: tuple[str, ...] = ("are removed", "are cut down", "disappear", "have been cut down", "have been removed")
WOODS_VERBS: tuple[tuple[str, str], ...] = (  # (singular, plural): "the forest is" / "the woods are"
    ("is cleared", "are cleared"),
    ("is cut down", "are cut down"),
    ("disappears", "disappear"),
    ("has been cleared", "have been cleared"),
    ("is removed", "are removed"),
)
WATER_NOUNS: dict[str, tuple[str, ...]] = {"pond": ("a pond", "a small pond"), "lake": ("a lake", "a large pond")}
WATER_VERBS: tuple[str, ...] = ("appears", "is dug", "emerges", "has appeared", "shows up")


def count_class(count: int) -> str:
    """Caption count class of a number of objects: "one", "two", "few" (3-5) or "many" (6+)."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    return "one" if count == 1 else "two" if count == 2 else "few" if count <= 5 else "many"


class PhraseWriter:
    """Samples phrases from a random stream (a pair's captions, or one image's scene captions)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def pick(self, options: Sequence[Any]) -> Any:
        return options[int(self.rng.integers(len(options)))]

    def maybe(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def location(self, event: dict[str, Any], p: float = 0.8) -> str:
        """A location phrase of the event (or "" with probability 1 - p)."""
        return self.pick(LOCATION_PHRASES[event["location"]]) if self.maybe(p) else ""

    def buildings(self, event: dict[str, Any]) -> tuple[str, bool]:
        """Noun phrase with its count word ("several villas") and whether it is plural."""
        k = event["count"]
        sing, plur = self.pick(BUILDING_NOUNS[event["kind"]])
        cls = count_class(k)
        if cls == "one":
            adj = "new " if event["action"] == "appear" and self.maybe(0.15) else ""
            return f"a {adj}{sing}", False
        return f"{self.pick(COUNT_WORDS[cls])} {plur}", True

    def trees(self, event: dict[str, Any]) -> str:
        cls = count_class(event["count"])
        if cls in ("one", "two"):  # clearing events remove at least three trees; kept for completeness
            return "a tree" if cls == "one" else "two trees"
        return f"{self.pick(COUNT_WORDS[cls])} trees"


def join_words(*parts: str) -> str:
    """The non-empty parts joined by single spaces."""
    return " ".join(p for p in parts if p)


def _verb(options: Sequence[tuple[str, str]], w: PhraseWriter, plural: bool) -> str:
    sing, plur = w.pick(options)
    return plur if plural else sing


# ---------------------------------------------------------------------------------------------------------- single
def _building_appear(w: PhraseWriter, ev: dict[str, Any]) -> str:
    np_, plural = w.buildings(ev)
    verb = _verb(APPEAR_VERBS, w, plural)
    loc = w.location(ev)
    surface = ev.get("surface")
    if ev.get("along_road"):
        where = (
            w.pick(("on both sides of the road",))
            if ev.get("both_sides")
            else w.pick(("along the road", "beside the road", "by the road", "next to the road"))
        )
        return join_words(np_, verb, where, loc)
    if surface in SURFACE_PHRASES:
        pattern = int(w.rng.integers(3))
        if pattern == 0:
            return join_words(np_, verb, w.pick(SURFACE_PHRASES[surface]), loc)
        if pattern == 1 and loc:
            return join_words(w.pick(SURFACE_NOUNS[surface]), loc, "is replaced by", np_)
    if w.maybe(0.15):
        where = loc or w.pick(LOCATION_PHRASES[ev["location"]])
        if plural:
            return join_words("there are", np_, "newly built", where)
        return join_words("there is a new", np_.removeprefix("a ").removeprefix("new "), where)
    return join_words(np_, verb, loc)


def _building_disappear(w: PhraseWriter, ev: dict[str, Any]) -> str:
    np_, plural = w.buildings(ev)
    verb = _verb(DISAPPEAR_VERBS, w, plural)
    loc = w.location(ev)
    if ev.get("along_road") and w.maybe(0.4):
        return join_words(np_, "beside the road", verb, loc)
    if loc and w.maybe(0.4):
        return join_words(np_, loc, verb)
    if w.maybe(0.2):
        return join_words(np_, verb, loc, "leaving bare land")
    return join_words(np_, verb, loc)


def _road(w: PhraseWriter, ev: dict[str, Any]) -> str:
    np_, plural = w.pick(ROAD_NOUNS[ev["shape"]])
    verb = _verb(ROAD_VERBS, w, plural)
    if ev["shape"] == "branch" and w.maybe(0.7):
        return join_words(
            np_, verb, w.pick(("to join the old road", "connected to the old road", "joining the existing road"))
        )
    surface = ev.get("surface")
    parts = [np_, verb]
    if ev.get("across") and w.maybe(0.5):
        parts.append(w.pick(("across the scene", "through the scene")))
    elif surface in SURFACE_PHRASES and w.maybe(0.4):
        parts.append(w.pick(SURFACE_PHRASES[surface]))
        if ev["location"] != "scene" and w.maybe(0.5):
            parts.append(w.pick(LOCATION_PHRASES[ev["location"]]))
    elif ev["location"] != "scene" and w.maybe(0.7):
        parts.append(w.pick(LOCATION_PHRASES[ev["location"]]))
    return join_words(*parts)


def _vegetation(w: PhraseWriter, ev: dict[str, Any]) -> str:
    loc = w.location(ev)
    if ev.get("forest") and w.maybe(0.6):
        noun = w.pick(("the woods", "the forest", "part of the forest", "the vegetation"))
        verb = _verb(WOODS_VERBS, w, noun == "the woods")
        return join_words(noun, loc, verb) if w.maybe(0.5) else join_words(noun, verb, loc)
    trees = w.trees(ev)
    if w.maybe(0.2):
        return join_words(trees, w.pick(TREE_VERBS), loc, "and the land becomes bare")
    return join_words(trees, w.pick(TREE_VERBS), loc)


def _water(w: PhraseWriter, ev: dict[str, Any]) -> str:
    np_ = w.pick(WATER_NOUNS[ev["kind"]])
    loc = w.location(ev)
    surface = ev.get("surface")
    if surface in SURFACE_NOUNS and loc and w.maybe(0.25):
        return join_words(w.pick(SURFACE_NOUNS[surface]), loc, "turns into", np_.replace("a large pond", "a lake"))
    if surface in SURFACE_PHRASES and w.maybe(0.4):
        return join_words(np_, w.pick(WATER_VERBS), w.pick(SURFACE_PHRASES[surface]), loc)
    return join_words(np_, w.pick(WATER_VERBS), loc)


# ---------------------------------------------------------------------------------------------------------- combined
def _road_and_buildings(w: PhraseWriter, road: dict[str, Any], bld: dict[str, Any]) -> str:
    np_, plural = w.buildings(bld)
    verb = _verb(APPEAR_VERBS, w, plural)
    road_np, road_plural = w.pick(ROAD_NOUNS[road["shape"]])
    road_verb = _verb(ROAD_VERBS, w, road_plural)
    side = "on both sides of" if bld.get("both_sides") else w.pick(("along", "beside"))
    pattern = int(w.rng.integers(5))
    it = "them" if road_plural else "it"
    if pattern == 0:
        return join_words(road_np, road_verb, "and", np_, verb, side, it)
    if pattern == 1:
        return join_words(np_, verb, side, road_np.replace("a road", "a new road", 1))
    if pattern == 2 and not road_plural:
        return join_words(road_np, "with", np_, w.pick(("appears", "is built")), w.location(bld, 0.5))
    if pattern == 3:
        return join_words(
            np_,
            "and",
            road_np,
            w.pick(("are built", "are constructed", "appear")),
            w.pick(SURFACE_PHRASES[road["surface"]]) if road.get("surface") in SURFACE_PHRASES else "",
        )
    return join_words(
        road_np,
        road_verb,
        "and",
        np_,
        verb,
        f"{side} the road" if not road_plural else "near the roads",
        w.location(bld, 0.5),
    )


def _clearing_and_buildings(w: PhraseWriter, veg: dict[str, Any], bld: dict[str, Any]) -> str:
    np_, plural = w.buildings(bld)
    verb = _verb(APPEAR_VERBS, w, plural)
    loc = w.location(bld)
    pattern = int(w.rng.integers(5))
    if pattern == 0:
        return join_words(np_, verb, "in place of the trees", loc)
    if pattern == 1:
        return join_words(w.trees(veg), w.pick(TREE_VERBS), "and", np_, verb, loc)
    if pattern == 2:
        return join_words(np_, "replace" if plural else "replaces", "the trees", loc)
    if pattern == 3:
        noun = w.pick(("the trees", "the woods", "the forest"))
        return join_words(noun, loc, "is replaced by" if noun == "the forest" else "are replaced by", np_)
    return join_words(np_, verb, w.pick(("in the woods", "in the forest")), loc)


def _road_through_trees(w: PhraseWriter, road: dict[str, Any], veg: dict[str, Any]) -> str:
    road_np, road_plural = w.pick(ROAD_NOUNS[road["shape"]])
    road_verb = _verb(ROAD_VERBS, w, road_plural)
    pattern = int(w.rng.integers(3))
    if pattern == 0:
        return join_words(road_np, road_verb, w.pick(("through the woods", "through the forest", "across the trees")))
    if pattern == 1:
        return join_words(road_np, road_verb, "and", w.trees(veg), w.pick(TREE_VERBS))
    return join_words(w.trees(veg), w.pick(("are cut down", "are removed")), "to build", road_np)


def _pair_sentence(w: PhraseWriter, events: list[dict[str, Any]]) -> str:
    by_type = {e["type"]: e for e in events}
    if len(events) == 1:
        ev = events[0]
        single: dict[str, Callable[[PhraseWriter, dict[str, Any]], str]] = {
            "road": _road,
            "vegetation": _vegetation,
            "water": _water,
        }
        if ev["type"] == "building":
            return _building_appear(w, ev) if ev["action"] == "appear" else _building_disappear(w, ev)
        return single[ev["type"]](w, ev)
    if set(by_type) == {"road", "building"}:
        if w.maybe(0.75):
            return _road_and_buildings(w, by_type["road"], by_type["building"])
        return join_words(_road(w, by_type["road"]), "and", _building_appear(w, by_type["building"]))
    if set(by_type) == {"vegetation", "building"}:
        if w.maybe(0.8):
            return _clearing_and_buildings(w, by_type["vegetation"], by_type["building"])
        return join_words(_vegetation(w, by_type["vegetation"]), "and", _building_appear(w, by_type["building"]))
    if set(by_type) == {"road", "vegetation"}:
        return _road_through_trees(w, by_type["road"], by_type["vegetation"])
    # Any other combination: the single-event sentences joined by "and".
    return " and ".join(_pair_sentence(w, [e]) for e in events)


def make_captions(events: list[dict[str, Any]], rng: np.random.Generator, n: int = N_CAPTIONS) -> list[str]:
    """``n`` captions (normalised strings, no final period) describing ``events``; no events → no-change sentences.

    Captions are made distinct when the templates allow it (up to 30 draws), like five different annotators.
    """
    if not events:
        return list(NO_CHANGE_SENTENCES[:n])
    w = PhraseWriter(rng)
    out: list[str] = []
    drawn: list[str] = []
    for _ in range(30):
        c = " ".join(_pair_sentence(w, events).split())
        drawn.append(c)
        if len(c.split()) <= MAX_WORDS and c not in out:
            out.append(c)
        if len(out) == n:
            return out
    if not out:  # cannot happen with the current templates (longest ~20 words); keep the shortest draw
        out.append(min(drawn, key=lambda c: len(c.split())))
    return [out[i % len(out)] for i in range(n)]  # very constrained events: repeat the variety that exists
