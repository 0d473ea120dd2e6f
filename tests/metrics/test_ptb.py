"""PTB tokenisation: the Python rules on known cases, and parity with pycocoevalcap's PTBTokenizer (Java)."""

from __future__ import annotations

import pytest

from changecap.metrics.ptb import (
    PUNCTUATIONS,
    ptb_clean,
    ptb_tokenize,
    ptb_tokenize_java,
    ptb_tokenize_python,
    ptb_tokens,
)
from tests.metrics.conftest import require_ptb_jar

# Varied caption text: COCO-style sentences, RSICC captions, and the PTB details the Python rules implement.
CAPTIONS: list[str] = [
    "A man riding a horse on the beach.",
    "Two dogs' bones and James's car are here.",
    'It isn\'t "happy" (really) [ok] {x}.',
    "Don't, can't, won't, ain't, shan't; I'm we're they've he'd you'll.",
    "they'd've it'll i'd cannot Cannot gonna gotta wanna lemme gimme",
    "'tis 'twas y'all ma'am o'clock rock'n'roll l'eau 'em '90s",
    "the road , the building , and trees .",
    " the scene is the same as before .",
    "many new buildings appear at the top-left corner ,and a road is built",
    "1,000 3.5 10:30 1/2 2,000m 10km 1.5km 1990s 2nd 5x5 3-storey 3 1/2",
    "$5 5% a+b x=y #hashtag #1 @home a*b a/b and/or AT&T S&P a&b r&d",
    "Mr. Smith went to Washington. there is a Dr. here; St. Louis Rd. Ave. Jan. etc. vs. bldg.",
    "no. 5 is here but no. it is not",
    "e.g. i.e. U.S. houses in the U.S. u.s.a. a.b.c x.y p.m. a.m.",
    "A B C. D E x. y. b. The house; b. dog m. house",
    "hello...world ... start end... x... z",
    "well--known x--y -- - a - b - 5- x- -5 +5",
    "wow! why? ok?! hi!?! semi;colon:colon",
    "“quoted” ‘single’ it’s don’t a – b — c … d",
    "café naïve ΣΑΣ straße İstanbul 45° km² n°",
    "``quoted'' `single' 'hello' he said",
    "(a) b) c( d[e] {f}",
    "road.building road.a built.Another 2.a",
    "THE BUILDINGS ARE RED!",
    "some trees were removed and a new road was constructed in the bottom right",
    "there is no difference",
    "a <b> tag and tab\tseparated text",
    "",
    "   ",
    ".",
    "a",
]


def test_known_tokens_without_java() -> None:
    assert ptb_tokens("It isn't (really) done.") == ["it", "is", "n't", "-lrb-", "really", "-rrb-", "done", "."]
    assert ptb_tokens('He said "yes".') == ["he", "said", "``", "yes", "''", "."]
    assert ptb_tokens("can't won't they'd've") == ["ca", "n't", "wo", "n't", "they", "'d", "'ve"]
    assert ptb_tokens("1,000 3.5km 1990s $5 50%") == ["1,000", "3.5", "km", "1990s", "$", "5", "50", "%"]
    assert ptb_tokens("Mr. Smith, U.S. e.g. no. 5") == ["mr.", "smith", ",", "u.s.", "e.g.", "no.", "5"]
    assert ptb_tokens("a–b … x") == ["a", "--", "b", "...", "x"]


def test_clean_drops_coco_punctuation_but_keeps_lowercase_brackets() -> None:
    # pycocoevalcap's list has "-LRB-" upper-case while the tokens are lower-cased: brackets survive.
    assert ptb_clean(ptb_tokens("A road (new), built; done!")) == "a road -lrb- new -rrb- built done"
    assert "-LRB-" in PUNCTUATIONS and "-lrb-" not in PUNCTUATIONS


def test_python_mode_never_needs_java() -> None:
    out, impl = ptb_tokenize(["A road."], mode="python")
    assert (out, impl) == (["a road"], "ptb-python")


@pytest.mark.java
def test_python_rules_match_pycocoevalcap_ptbtokenizer() -> None:
    require_ptb_jar()
    tok_mod = pytest.importorskip("pycocoevalcap.tokenizer.ptbtokenizer")
    data = {i: [{"caption": c}] for i, c in enumerate(CAPTIONS)}
    expected = tok_mod.PTBTokenizer().tokenize(data)
    ours = ptb_tokenize_python(CAPTIONS)
    mismatches = [(c, expected[i][0], ours[i]) for i, c in enumerate(CAPTIONS) if expected[i][0] != ours[i]]
    assert not mismatches


@pytest.mark.java
def test_java_mode_matches_pycocoevalcap_and_keeps_lines_aligned() -> None:
    require_ptb_jar()
    tok_mod = pytest.importorskip("pycocoevalcap.tokenizer.ptbtokenizer")
    data = {i: [{"caption": c}] for i, c in enumerate(CAPTIONS)}
    expected = tok_mod.PTBTokenizer().tokenize(data)
    out, impl = ptb_tokenize(CAPTIONS, mode="auto")
    assert impl == "ptb-java"
    assert out == [expected[i][0] for i in range(len(CAPTIONS))]
    # line separators inside a caption would shift every later caption in pycocoevalcap; ours stay aligned
    tricky = ["a\rb", "c\u2028d", "e\nf", "last one."]
    assert ptb_tokenize_java(tricky) == ["a b", "c d", "e f", "last one"]


def test_java_mode_reports_unavailability(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(RuntimeError, match="no java on PATH"):
        ptb_tokenize(["a"], mode="java")
    assert ptb_tokenize(["A b."], mode="auto") == (["a b."], "ptb-python")
