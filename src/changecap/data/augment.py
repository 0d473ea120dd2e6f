"""Caption-aware geometric augmentation (off by default: no official RSICC repository augments).

Flipping a pair changes where things are, so the spatial words of every caption are remapped with the images (and
the mask):

* **horizontal flip** (mirror left↔right): ``left``↔``right``, ``leftmost``↔``rightmost``, ``east``↔``west``,
  ``eastern``↔``western``, ``eastward(s)``↔``westward(s)``, ``northeast``↔``northwest``,
  ``southeast``↔``southwest``, ``clockwise``↔``counterclockwise`` (a mirror reverses rotation);
* **vertical flip** (mirror top↔bottom): ``top``↔``bottom``, ``topmost``↔``bottommost``, ``upper``↔``lower``,
  ``uppermost``↔``lowermost``, ``above``↔``below``, ``north``↔``south``, ``northern``↔``southern``,
  ``northward(s)``↔``southward(s)``, ``northeast``↔``southeast``, ``northwest``↔``southwest``,
  ``clockwise``↔``counterclockwise``.

Hyphenated compounds are remapped part by part (``lower-left`` → ``lower-right`` under a horizontal flip,
``top-left`` → ``bottom-left`` under a vertical one, ``north-west`` → ``north-east``), keeping the case of each
part (Dubai-CC is case-sensitive: ``Left`` → ``Right``).

Deliberately *not* remapped, because in captions they are rarely positions in the image: ``up``/``down`` ("built
up", "torn down"), ``over``/``under`` ("a bridge over the river", "under construction"), ``front``/``back``,
``high``/``low`` ("high-rise"), ``upside-down`` / ``top-down`` / ``bottom-up`` and ``right-angle(d)``.
A stray non-spatial ``left`` ("nothing is left") would still be swapped; in the RSICC corpora ``left`` is
overwhelmingly positional, which is why the benchmarks' spatial phrases survive the remapping.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _symmetric(pairs: Sequence[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for a, b in pairs:
        out[a], out[b] = b, a
    return out


_ROTATION = [("clockwise", "counterclockwise")]
HFLIP_WORDS: dict[str, str] = _symmetric(
    [
        ("left", "right"),
        ("leftmost", "rightmost"),
        ("east", "west"),
        ("eastern", "western"),
        ("eastward", "westward"),
        ("eastwards", "westwards"),
        ("northeast", "northwest"),
        ("southeast", "southwest"),
        ("northeastern", "northwestern"),
        ("southeastern", "southwestern"),
        *_ROTATION,
    ]
)
HFLIP_WORDS["anticlockwise"] = "clockwise"
VFLIP_WORDS: dict[str, str] = _symmetric(
    [
        ("top", "bottom"),
        ("topmost", "bottommost"),
        ("upper", "lower"),
        ("uppermost", "lowermost"),
        ("above", "below"),
        ("north", "south"),
        ("northern", "southern"),
        ("northward", "southward"),
        ("northwards", "southwards"),
        ("northeast", "southeast"),
        ("northwest", "southwest"),
        ("northeastern", "southeastern"),
        ("northwestern", "southwestern"),
        *_ROTATION,
    ]
)
VFLIP_WORDS["anticlockwise"] = "clockwise"
# Compounds whose parts are spatial words but whose meaning is not a position in the image.
KEEP_COMPOUNDS: frozenset[str] = frozenset(
    {"right-angle", "right-angled", "right-angles", "upside-down", "top-down", "bottom-up", "left-over", "left-overs"}
)


def _match_case(template: str, word: str) -> str:
    if template.isupper() and len(template) > 1:
        return word.upper()
    if template[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


def _map_word(word: str, table: dict[str, str]) -> str:
    if "-" in word:
        if word.lower() in KEEP_COMPOUNDS:
            return word
        return "-".join(_map_word(part, table) for part in word.split("-"))
    target = table.get(word.lower())
    return word if target is None else _match_case(word, target)


def flip_caption(caption: str, horizontal: bool = False, vertical: bool = False) -> str:
    """Remap the spatial words of a normalised caption (space-separated tokens) for the given flips."""
    words = caption.split(" ")
    if horizontal:
        words = [_map_word(w, HFLIP_WORDS) for w in words]
    if vertical:
        words = [_map_word(w, VFLIP_WORDS) for w in words]
    return " ".join(words)


def flip_array(arr: np.ndarray, horizontal: bool = False, vertical: bool = False) -> np.ndarray:
    """Flip an ``[H, W(, C)]`` array; returns a contiguous copy only when a flip happens."""
    if horizontal:
        arr = arr[:, ::-1]  # [H, W(, C)], columns reversed
    if vertical:
        arr = arr[::-1]  # [H, W(, C)], rows reversed
    return np.ascontiguousarray(arr) if (horizontal or vertical) else arr


def flip_pair(
    before: np.ndarray,
    after: np.ndarray,
    mask: np.ndarray | None,
    captions: Sequence[str],
    horizontal: bool = False,
    vertical: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, list[str]]:
    """Apply the same flips to both dates, the mask and every caption."""
    return (
        flip_array(before, horizontal, vertical),
        flip_array(after, horizontal, vertical),
        None if mask is None else flip_array(mask, horizontal, vertical),
        [flip_caption(c, horizontal, vertical) for c in captions],
    )
