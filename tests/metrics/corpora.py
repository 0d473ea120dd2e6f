"""Caption corpora for the parity tests against pycocoevalcap: each case stresses one detail of the coco scorers.

Every case is ``(hypotheses, reference lists)``; strings are already "tokenised" (the scorers split them)."""

from __future__ import annotations

import random

Case = tuple[list[str], list[list[str]]]

_WORDS = [
    "a",
    "an",
    "the",
    "road",
    "roads",
    "building",
    "houses",
    "tree",
    "trees",
    "new",
    "left",
    "top",
    "is",
    "are",
    "has",
]


def random_corpus(seed: int, pairs: int, vocab: int = 40, max_len: int = 14, max_refs: int = 6) -> Case:
    """Random captions over a small vocabulary (frequent n-gram overlaps) with 1..max_refs references each."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(vocab)]

    def sent() -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(0, max_len)))

    hyps = [sent() for _ in range(pairs)]
    refs = [[sent() for _ in range(rng.randint(1, max_refs))] for _ in range(pairs)]
    # make sure at least one reference is non-empty so coco's df table is never empty
    refs[0][0] = refs[0][0] or "w0 w1"
    return hyps, refs


def _levir_like(seed: int, pairs: int) -> Case:
    """RSICC-style: half the pairs share the five no-change references; greedy-decoder-like repeated hypotheses."""
    rng = random.Random(seed)
    nochange = [
        "there is no difference",
        "the two scenes seem identical",
        "the scene is the same as before",
        "no change has occurred",
        "almost nothing has changed",
    ]
    hyps: list[str] = []
    refs: list[list[str]] = []
    for i in range(pairs):
        if i % 2:
            refs.append(list(nochange))
            hyps.append(rng.choice([nochange[2], nochange[2], "a road is built"]))
        else:
            caps = [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 12))) for _ in range(5)]
            refs.append(caps)
            hyps.append(rng.choice([caps[0], "many new buildings appear", " ".join(rng.sample(_WORDS, 6))]))
    return hyps, refs


PARITY_CASES: dict[str, Case] = {
    "basic": (
        ["a new road is built", "two houses appear on the left"],
        [["a road is built", "a new road appears"], ["two houses are built on the left side", "houses appear"]],
    ),
    "empty_candidate": (
        ["", "a house", ""],
        [["a house is built", "houses"], ["a house", "two houses are built"], ["", "x"]],
    ),
    "punctuation": (
        ["a road , a house .", "trees ; roads !", "road,house"],
        [["a road , and a house .", "a road"], ["trees ; roads", "trees !"], ["road , house", "road,house"]],
    ),
    "duplicates": (
        ["the scene is the same as before"] * 4 + ["a road"] * 3,
        [["there is no difference", "the scene is the same as before"]] * 4 + [["a road is built"]] * 3,
    ),
    "single_item": (["a new road is built on the left"], [["a road is built", "a new road on the left"]]),
    "repeated_ngrams": (
        ["the the the the the", "a b a b a b a b", "x x x"],
        [["the the cat", "the"], ["a b a b", "b a b a b a"], ["x", "x x x x x x x"]],
    ),
    "longer_shorter": (
        ["a", "a road " * 30, "road is built"],
        [["a new road is built on the top left of the scene"], ["a road"], ["road"]],
    ),
    "unicode": (
        ["café naïve résumé", "道路 建 成", "🏠 house 🏠", "ΣΑΣ σας"],
        [["café naïve", "resume"], ["道路 建 成 了", "道路"], ["🏠 house", "house 🏠 🏠"], ["σας", "ΣΑΣ"]],
    ),
    "ref_counts": (
        ["a b c", "a b c", "a b c", "a b c"],
        [["a b c"], ["a b", "b c", "a c"], ["a"] * 7, ["c b a", "a b c d e f", "x"]],
    ),
    "whitespace": (
        ["a  road  is built", " leading and trailing ", "tab\tseparated words", "no\u00a0break space"],
        [["a road is built", "a  road"], ["leading and trailing", " leading"], ["tab separated words"], ["no break"]],
    ),
    "identical_and_disjoint": (
        ["a new road is built", "completely different words here"],
        [["a new road is built"], ["a new road is built", "two houses"]],
    ),
    "two_pairs": (["a road", "a house"], [["a road is built"], ["a house is built"]]),
    "levir_like": _levir_like(3, 60),
    "random_small_vocab": random_corpus(11, 150, vocab=12, max_len=10),
    "random_large_vocab": random_corpus(12, 150, vocab=400, max_len=20),
}
