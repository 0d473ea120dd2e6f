"""N-gram counting shared by BLEU and CIDEr-D.

Both coco scorers split a caption with ``str.split()`` (any run of whitespace) and count every k-gram for
k = 1..n. Two choices make our scorers fast while giving the same numbers:

* an n-gram is the string of its words joined by one space (``"a red roof"``), not a tuple: ``str.split()`` words
  never contain whitespace, so the join is one-to-one, different orders never collide (k-grams have k − 1
  spaces), and - unlike tuples - strings cache their hash, so the many dictionary look-ups of the scorers cost
  almost nothing;
* captions are counted once per distinct string and the counts are shared by both scorers; in RSICC test sets the
  five no-change references repeat for half of the pairs and greedy decoders repeat a few hypotheses many times.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import NamedTuple


class CookedCaption(NamedTuple):
    """N-gram statistics of one caption string."""

    length: int  # number of words (coco: ``len(s.split())``)
    # Every k-gram, k = 1..n, keyed by its space-joined words, in order of first occurrence with the orders
    # contiguous: unigrams first, then bigrams, ... (CIDEr-D slices the values per order for the norms).
    counts: dict[str, int]
    order_ends: tuple[int, ...]  # the (k+1)-grams are the keys at positions [order_ends[k-1], order_ends[k])
    repeated: dict[str, int]  # the k-grams occurring more than once (usually none); see ``bleu``


def ngram_order(gram: str) -> int:
    """0-based order of a space-joined n-gram (0 for a unigram)."""
    return gram.count(" ")


def cook(caption: str, n: int = 4) -> CookedCaption:
    """Split on whitespace and count all k-grams up to order ``n``."""
    words = caption.split()
    grams: list[str] = list(words)
    positions = [len(words)]
    prev = words
    for k in range(1, n):
        # (k+1)-grams extend the k-grams by one word; the string concatenation runs in C.
        prev = [a + " " + b for a, b in zip(prev, words[k:])]
        grams += prev
        positions.append(len(prev))
    counts: dict[str, int] = dict.fromkeys(grams, 1)
    repeated: dict[str, int] = {}
    if len(counts) < len(grams):  # some n-gram repeats: count properly (rarer, slower path)
        counts = dict(Counter(grams))
        repeated = {g: c for g, c in counts.items() if c > 1}
        for g, c in repeated.items():
            positions[ngram_order(g)] -= c - 1  # distinct n-grams of that order
    ends: list[int] = []
    total = 0
    for p in positions:
        total += p
        ends.append(total)
    return CookedCaption(len(words), counts, tuple(ends), repeated)


class NgramCache:
    """Memo ``caption string -> CookedCaption``. The cached counters are shared: callers must not mutate them."""

    def __init__(self, n: int = 4) -> None:
        self.n = n
        self._memo: dict[str, CookedCaption] = {}

    def __call__(self, caption: str) -> CookedCaption:
        hit = self._memo.get(caption)
        if hit is None:
            hit = cook(caption, self.n)
            self._memo[caption] = hit
        return hit


def check_pairs(hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> None:
    """Programming-level sanity checks shared by the scorers (user input is validated in ``caption_eval``)."""
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} reference lists")
    if not hyps:
        raise ValueError("no caption pairs to score")
    for i, rs in enumerate(refs):
        if isinstance(rs, str) or len(rs) == 0:
            raise ValueError(f"pair {i}: references must be a non-empty list of strings")
