"""Caption-side rules of ``changecap data audit``: no-change sentences, garbled text, spatial phrases, mask words.

Everything here works on normalised captions (``PairRecord.captions``: RSICC-tokenised, joined with single spaces)
and is format-independent. The rules are deliberately conservative (a finding should be worth a look):

* **No-change sentences** are the five LEVIR-CC sentences and the fifteen Dubai-CC ones, compared
  case-insensitively, for every format.
* **Garbled** captions: no word at all; a token mixing letters with digits or other symbols (``along1side``); a
  letter repeated three times in a row (``buildinggg``); a token longer than 25 characters; the same word or two- or
  three-word group twice in a row (``on on``).
* **Spatial phrases** name a part of the image: a corner (``top left``, ``lower-right``), a side (``at the top``,
  ``on the left side``) or the centre (``in the middle``). A side word counts only after ``the`` with a preposition
  before it or a place noun after it (so ``the lower road`` or ``the trees are left`` do not count), and a phrase
  followed by ``of`` + a noun other than the scene (``on the left of the road``) is relative to an object and skipped.
  North / south / east / west are not read (orientation is not given by the datasets).
* **Mask words** (building and road nouns) tell whether a caption describes a change that a LEVIR-MCI-style mask
  (road / building classes) must show; a noun after a preposition (``trees beside the road``) is a landmark, not
  the change, and does not count. Vegetation and water nouns name changes such masks leave out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from changecap.data.text import DUBAI_NO_CHANGE_SENTENCES, NO_CHANGE_SENTENCES, tokenize

_NO_CHANGE = frozenset(tuple(tokenize(s, lower=True)) for s in (*NO_CHANGE_SENTENCES, *DUBAI_NO_CHANGE_SENTENCES))

PUNCTUATION = frozenset({",", ";"})


def is_no_change_sentence(caption: str) -> bool:
    """True when a caption is one of the LEVIR-CC or Dubai-CC no-change sentences (case-insensitive)."""
    return tuple(tokenize(caption, lower=True)) in _NO_CHANGE


def words(caption: str) -> list[str]:
    """The caption's word tokens (punctuation tokens dropped)."""
    return [t for t in caption.split() if t not in PUNCTUATION]


# ---------------------------------------------------------------------------------------------------------- garbled
_WORD = re.compile(r"[A-Za-z]+(?:['-][A-Za-z]+)*'?|\d+(?:st|nd|rd|th|s)?|\d+(?:[.,]\d+)?")
_TRIPLE_LETTER = re.compile(r"([A-Za-z])\1\1")
MAX_TOKEN_CHARS = 25


def garbled_reasons(caption: str) -> list[str]:
    """Why a non-empty caption looks garbled (empty list: it does not)."""
    toks = caption.split()
    ws = words(caption)
    reasons: list[str] = []
    if not ws:
        return ["no word, only punctuation"]
    odd = [t for t in ws if not _WORD.fullmatch(t)]
    if odd:
        reasons.append("non-word token " + ", ".join(repr(t) for t in odd[:3]))
    tripled = [t for t in ws if _TRIPLE_LETTER.search(t) and t not in odd]
    if tripled:
        reasons.append("letter repeated three times in " + ", ".join(repr(t) for t in tripled[:3]))
    long = [t for t in ws if len(t) > MAX_TOKEN_CHARS and t not in odd]
    if long:
        reasons.append(f"token longer than {MAX_TOKEN_CHARS} characters " + repr(long[0]))
    low = [t.lower() for t in toks]
    for n in (1, 2, 3):
        hit = next(
            (
                i
                for i in range(len(low) - 2 * n + 1)
                if low[i : i + n] == low[i + n : i + 2 * n] and not set(low[i : i + n]) <= PUNCTUATION
            ),
            None,
        )
        if hit is not None:
            reasons.append(f"repeated {'word' if n == 1 else f'{n}-word group'} {' '.join(toks[hit : hit + n])!r}")
            break
    return reasons


# ---------------------------------------------------------------------------------------------------------- spatial
_VERTICAL: dict[str, str] = {
    "top": "top",
    "upper": "top",
    "uppermost": "top",
    "topmost": "top",
    "higher": "top",
    "bottom": "bottom",
    "lower": "bottom",
    "lowermost": "bottom",
    "bottommost": "bottom",
}
_HORIZONTAL: dict[str, str] = {"left": "left", "leftmost": "left", "right": "right", "rightmost": "right"}
_CENTRE = frozenset({"center", "centre", "middle", "central"})
_PREPOSITIONS = frozenset(
    {"at", "on", "in", "to", "near", "towards", "toward", "from", "along", "by", "across", "into", "onto", "around"}
)
_PLACE_NOUNS = frozenset(
    {"part", "parts", "side", "sides", "corner", "corners", "half", "area", "region", "edge", "section", "portion",
     "end", "border", "quarter"}
)  # fmt: skip
_SCENE_NOUNS = frozenset(
    {"scene", "image", "picture", "photo", "area", "map", "view", "region", "tile", "figure", "graph", "frame"}
)
_ARTICLES = frozenset({"the", "a", "an", "this", "that"})

# Region → the bands of the image (in thirds) that, holding every changed pixel, contradict it.
SPATIAL_REGIONS: tuple[str, ...] = (
    "top",
    "bottom",
    "left",
    "right",
    "top-left",
    "top-right",
    "bottom-left",
    "bottom-right",
    "center",
)


@dataclass(frozen=True)
class SpatialPhrase:
    """A part of the image named by a caption: ``region`` (one of ``SPATIAL_REGIONS``) and the words that name it."""

    region: str
    text: str


def _split_hyphens(tokens: Sequence[str]) -> list[str]:
    out: list[str] = []
    for t in tokens:
        parts = t.lower().split("-")
        spatial = any(p in _VERTICAL or p in _HORIZONTAL or p in _CENTRE for p in parts)
        out.extend(p for p in parts if p) if spatial and len(parts) > 1 else out.append(t.lower())
    return out


def _relative_to_object(toks: list[str], j: int) -> bool:
    """``toks[j:]`` continues a place phrase: ``of`` + a noun other than the scene makes it relative to that noun."""
    if j < len(toks) and toks[j] in _PLACE_NOUNS:
        j += 1
    if j >= len(toks) or toks[j] != "of":
        return False
    j += 1
    while j < len(toks) and toks[j] in _ARTICLES:
        j += 1
    return j < len(toks) and toks[j] not in _SCENE_NOUNS


def spatial_phrases(caption: str) -> list[SpatialPhrase]:
    """Parts of the image a caption places its change in (see the module docstring for the rules)."""
    toks = _split_hyphens(words(caption))
    found: list[SpatialPhrase] = []
    i = 0
    while i < len(toks):
        t = toks[i]
        nxt = toks[i + 1] if i + 1 < len(toks) else ""
        prev = toks[i - 1] if i >= 1 else ""
        prev2 = toks[i - 2] if i >= 2 else ""
        # A corner: "top left", "lower-right", also "left top".
        corner = (
            (_VERTICAL[t], _HORIZONTAL[nxt])
            if t in _VERTICAL and nxt in _HORIZONTAL
            else (_VERTICAL[nxt], _HORIZONTAL[t])
            if t in _HORIZONTAL and nxt in _VERTICAL
            else None
        )
        if corner is not None:
            if not _relative_to_object(toks, i + 2):
                found.append(SpatialPhrase(f"{corner[0]}-{corner[1]}", f"{t} {nxt}"))
            i += 2
            continue
        is_side = t in _VERTICAL or t in _HORIZONTAL or t in _CENTRE
        placed = prev == "the" and (prev2 in _PREPOSITIONS or nxt in _PLACE_NOUNS)
        if is_side and placed and not _relative_to_object(toks, i + 1):
            region = _VERTICAL.get(t) or _HORIZONTAL.get(t) or "center"
            found.append(SpatialPhrase(region, " ".join(x for x in (prev2, prev, t) if x)))
        i += 1
    return found


@dataclass(frozen=True)
class ChangeExtent:
    """Bounding box of a mask's changed pixels as fractions of the image (``y0`` top edge … ``x1`` right edge)."""

    y0: float
    y1: float
    x0: float
    x1: float


def contradiction(region: str, ext: ChangeExtent) -> str | None:
    """Why ``region`` cannot hold the change (every changed pixel lies in the opposite third), or None.

    A phrase is contradicted only when *no* changed pixel lies outside the opposite third: captions describe
    centroids and extents loosely, and a lenient rule keeps clean data free of findings.
    """
    third, two = 1.0 / 3.0, 2.0 / 3.0
    bands = {
        "top": ext.y0 >= two and "the bottom third",
        "bottom": ext.y1 <= third and "the top third",
        "left": ext.x0 >= two and "the right third",
        "right": ext.x1 <= third and "the left third",
    }
    if region in bands:
        return bands[region] or None
    if region == "center":
        return next((b for b in bands.values() if b), None)
    vert, horiz = region.split("-")
    return bands[vert] or bands[horiz] or None


# ---------------------------------------------------------------------------------------------------------- mask words
BUILDING_WORDS = frozenset(
    {"building", "buildings", "house", "houses", "villa", "villas", "apartment", "apartments", "bungalow",
     "bungalows", "cottage", "cottages", "skyscraper", "skyscrapers", "factory", "factories", "warehouse",
     "warehouses", "storehouse", "storehouses", "dwelling", "dwellings", "residence", "residences"}
)  # fmt: skip
ROAD_WORDS = frozenset(
    {"road", "roads", "street", "streets", "highway", "highways", "crossroad", "crossroads", "roundabout",
     "intersection", "avenue", "avenues"}
)  # fmt: skip
# Changes that road / building masks do not show.
OTHER_CHANGE_WORDS = frozenset(
    {"tree", "trees", "vegetation", "wood", "woods", "forest", "forests", "grass", "grassland", "grasslands",
     "meadow", "meadows", "plant", "plants", "bush", "bushes", "shrub", "shrubs", "greenery", "lawn", "lawns",
     "pond", "ponds", "lake", "lakes", "water", "river", "rivers", "pool", "pools", "farmland", "farmlands", "field",
     "fields", "crop", "crops"}
)  # fmt: skip
_LANDMARK_PREPOSITIONS = _PREPOSITIONS | frozenset(
    {"beside", "of", "next", "behind", "between", "through", "over", "under", "alongside", "about", "with"}
)
_NOUN_MODIFIERS = _ARTICLES | frozenset({"old", "existing", "main", "two", "both", "original", "other"})


def changed_objects(caption: str, vocabulary: frozenset[str]) -> list[str]:
    """Words of ``vocabulary`` the caption names as changed objects (a landmark such as ``beside the road`` and
    other nouns after a preposition do not count)."""
    toks = [t.lower() for t in words(caption)]
    found: list[str] = []
    for i, t in enumerate(toks):
        if t not in vocabulary:
            continue
        j = i - 1
        while j >= 0 and toks[j] in _NOUN_MODIFIERS:
            j -= 1
        if j >= 0 and toks[j] in _LANDMARK_PREPOSITIONS:
            continue
        found.append(t)
    return found
