"""Caption text processing: the RSICC tokenisation rule and the no-change sentences.

The rule is the one of the peers' ``preprocess_data.py`` (RSCaMa / HiSem / Chg2Cap / Change-Agent), see
The peers' rule: a space is inserted before every ``;`` and ``,`` (kept as tokens), every ``?`` and
``.`` is deleted, the string is split on single spaces and empty tokens are dropped. No stemming; hyphenated
words stay whole. Lower-casing is optional (off by default: the peers do not lower-case, and Dubai-CC ids are
case-sensitive).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

# The five LEVIR-CC no-change sentences (also used by WHU-CDC). Order as the peers list them.
NO_CHANGE_SENTENCES: tuple[str, ...] = (
    "the scene is the same as before",
    "there is no difference",
    "the two scenes seem identical",
    "no change has occurred",
    "almost nothing has changed",
)
# Training-time canonical caption for every unchanged pair; also the sentence whose presence marks a
# pair as unchanged when no ``changeflag`` is given.
CANONICAL_NO_CHANGE = "the scene is the same as before"

_NO_CHANGE_TOKENS = frozenset(tuple(s.split()) for s in NO_CHANGE_SENTENCES)

# Dubai-CC no-change sentences (capitalised in the data), as listed by the Chg2Cap evaluation script with its missing
# commas restored (Chg2Cap's list concatenates adjacent strings). Compared case-insensitively.
DUBAI_NO_CHANGE_SENTENCES: tuple[str, ...] = (
    "Nothing has changed",
    "There is no difference",
    "All remained the same",
    "Everything remains the same",
    "Nothing has changed in this area",
    "Nothing changed in this area",
    "No changes in this area",
    "No change was made",
    "There is no change to mention",
    "No changes to mention",
    "No changed to mention",
    "No difference in this area",
    "No change to mention",
    "No change occurred in this area",
    "The area appears the same",
)
# Training-time canonical caption of an unchanged Dubai-CC pair (our choice: the first sentence of the list above;
# the LEVIR sentence is not in Dubai-CC's case-sensitive vocabulary).
DUBAI_CANONICAL_NO_CHANGE = "Nothing has changed"
_DUBAI_NO_CHANGE_TOKENS = frozenset(tuple(s.lower().split()) for s in DUBAI_NO_CHANGE_SENTENCES)


def tokenize(raw: str, lower: bool = False) -> list[str]:
    """Split a raw caption into word tokens with the RSICC rule (no ``<START>``/``<END>``).

    >>> tokenize(" the road, on the left; is built .")
    ['the', 'road', ',', 'on', 'the', 'left', ';', 'is', 'built']
    """
    text = raw.lower() if lower else raw
    text = text.replace(";", " ;").replace(",", " ,").replace("?", "").replace(".", "")
    return [t for t in text.split(" ") if t]


def normalize_caption(raw: str, lower: bool = False) -> str:
    """Tokenise and re-join with single spaces (the canonical string form of a caption)."""
    return " ".join(tokenize(raw, lower=lower))


def is_no_change(caption: str | Sequence[str]) -> bool:
    """True if a caption (raw string or token list) is one of the five no-change sentences.

    Comparison is case-insensitive so capitalised variants ("Nothing has changed" style) are not matched by
    accident only when they are one of the five sentences.
    """
    tokens = tokenize(caption, lower=True) if isinstance(caption, str) else [t.lower() for t in caption]
    tokens = [t for t in tokens if t not in ("<START>".lower(), "<END>".lower())]
    return tuple(tokens) in _NO_CHANGE_TOKENS


def changed_from_captions(captions: Iterable[str | Sequence[str]]) -> bool:
    """Derive the change flag from a pair's captions, as RSCaMa and HiSem do.

    A pair is unchanged iff the canonical sentence ``the scene is the same as before`` is among its captions. For
    robustness with datasets that only carry other paraphrases, a pair whose captions are *all* no-change sentences
    is also unchanged.
    """
    caps = list(captions)
    if not caps:
        return True
    canon = tuple(CANONICAL_NO_CHANGE.split())
    for c in caps:
        toks = tokenize(c, lower=True) if isinstance(c, str) else [t.lower() for t in c]
        toks = [t for t in toks if t not in ("<start>", "<end>")]
        if tuple(toks) == canon:
            return False
    return not all(is_no_change(c) for c in caps)


def dubai_changed_from_captions(captions: Iterable[str | Sequence[str]]) -> bool:
    """Change flag for Dubai-CC pairs, which carry no ``changeflag`` and use their own no-change sentences.

    A pair is unchanged iff *every* caption is a no-change sentence (Dubai-CC or LEVIR list, case-insensitive).
    Chg2Cap looks at the first reference only; requiring all of them is order-independent and never treats a pair
    as unchanged when an annotator described a change (which matters for training-time canonicalisation).
    """
    caps = list(captions)
    if not caps:
        return True

    def no_change(c: str | Sequence[str]) -> bool:
        toks = tokenize(c, lower=True) if isinstance(c, str) else [t.lower() for t in c]
        toks = [t for t in toks if t not in ("<start>", "<end>")]
        return tuple(toks) in _DUBAI_NO_CHANGE_TOKENS or tuple(toks) in _NO_CHANGE_TOKENS

    return not all(no_change(c) for c in caps)
