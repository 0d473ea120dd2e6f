"""Caption rules of the audit: no-change sentences, garbled text, spatial phrases, the objects a caption changes."""

from __future__ import annotations

import pytest

from changecap.data.audit_text import (
    BUILDING_WORDS,
    OTHER_CHANGE_WORDS,
    ROAD_WORDS,
    ChangeExtent,
    changed_objects,
    contradiction,
    garbled_reasons,
    is_no_change_sentence,
    spatial_phrases,
)
from changecap.data.text import DUBAI_NO_CHANGE_SENTENCES, NO_CHANGE_SENTENCES, normalize_caption


def test_no_change_sentences_of_both_datasets() -> None:
    for s in (*NO_CHANGE_SENTENCES, *DUBAI_NO_CHANGE_SENTENCES):
        assert is_no_change_sentence(normalize_caption(s))
    assert is_no_change_sentence("Nothing has changed .")
    assert not is_no_change_sentence("nothing has changed except a road")
    assert not is_no_change_sentence("a house is built")


@pytest.mark.parametrize(
    ("caption", "needle"),
    [
        ("a road with houses along1side appears", "non-word token 'along1side'"),
        ("a\\almost all of the plants are removed", "non-word"),
        ("several villas have been built on on side of the road", "repeated word 'on'"),
        ("a house a house is built", "repeated 2-word group 'a house'"),
        ("many buildinggg appear", "letter repeated three times"),
        ("a " + "x" * 30 + " appears", "longer than 25"),
        (", ;", "no word"),
    ],
)
def test_garbled_captions(caption: str, needle: str) -> None:
    assert any(needle in r for r in garbled_reasons(caption)), garbled_reasons(caption)


@pytest.mark.parametrize(
    "caption",
    [
        "a t-shaped road is built , and the road's trees are cut down",
        "2 houses appear in the 1st row",
        "Nothing has changed",
        "the woods , the woods and the trees disappear",  # a repeat that is not adjacent
    ],
)
def test_plain_captions_are_not_garbled(caption: str) -> None:
    assert garbled_reasons(caption) == []


@pytest.mark.parametrize(
    ("caption", "regions"),
    [
        ("several houses are built at the top", ["top"]),
        ("a house appears in the lower-right corner", ["bottom-right"]),
        ("villas are built in the higher left corner", ["top-left"]),
        ("a road on the left side of the scene", ["left"]),
        ("the right side is covered by houses", ["right"]),
        ("in the middle of the scene buildings appear", ["center"]),
        ("houses appear at the top and a road on the right", ["top", "right"]),
        ("a house on the left of the road is demolished", []),  # relative to the road
        ("the trees are left and the lower buildings remain", []),  # not places
        ("a road appears in the middle of the forest", []),
    ],
)
def test_spatial_phrases(caption: str, regions: list[str]) -> None:
    assert [p.region for p in spatial_phrases(caption)] == regions


def test_contradiction_needs_every_changed_pixel_in_the_opposite_third() -> None:
    bottom = ChangeExtent(y0=0.7, y1=0.9, x0=0.1, x1=0.5)  # bottom third, left and centre columns
    assert contradiction("top", bottom) == "the bottom third"
    assert contradiction("top-right", bottom) == "the bottom third"
    assert contradiction("center", bottom) == "the bottom third"
    assert contradiction("bottom", bottom) is None
    assert contradiction("left", bottom) is None
    assert contradiction("right", bottom) is None  # some changed pixels lie right of the left third
    reaches_middle = ChangeExtent(y0=0.6, y1=0.9, x0=0.1, x1=0.3)
    assert contradiction("top", reaches_middle) is None
    assert contradiction("right", reaches_middle) == "the left third"
    assert contradiction("bottom-right", reaches_middle) == "the left third"


def test_changed_objects_skip_landmarks() -> None:
    mask_words = BUILDING_WORDS | ROAD_WORDS
    assert changed_objects("the trees beside the road are removed", mask_words) == []
    assert changed_objects("the trees beside the road are removed", OTHER_CHANGE_WORDS) == ["trees"]
    assert changed_objects("houses are built along the road", mask_words) == ["houses"]
    assert changed_objects("a new road is built next to the old road", mask_words) == ["road"]
    assert changed_objects("trees on both sides of the road are cut down", mask_words) == []
