"""PTB tokenisation for the ``coco`` protocol, as done by pycocoevalcap's ``PTBTokenizer``.

pycocoevalcap runs Stanford CoreNLP 3.4.1's ``edu.stanford.nlp.process.PTBTokenizer -preserveLines -lowerCase``
over all captions (one per line), then drops the tokens in ``PUNCTUATIONS`` and joins the rest with single spaces.
Two consequences worth knowing: the bracket tokens come out lower-cased (``-lrb-``) while the drop list has them
upper-case (``-LRB-``), so brackets survive as ``-lrb-``/``-rrb-``/``-lsb-``/...; and punctuation that is not on the
list (``!?``, ``%``, ``$``, ``&``) survives too.

Two implementations:

* ``mode="java"`` runs the very jar shipped with pycocoevalcap (exact by construction; ~0.3 s per call);
* ``mode="python"`` is our re-implementation of the PTB rules that matter for caption text: lower-casing; splitting
  off ``. , ; : ! ?`` and symbols; numbers with ``. , : /`` kept whole (``1,000``, ``3.5``, ``10:30``) but split from
  a following unit (``1.5km`` → ``1.5 km``); hyphenated, slashed and dotted words kept whole (``lower-left``,
  ``and/or``, ``road.building``); contractions (``is n't``, ``ca n't``, ``it 's``, ``they 'd 've``,
  ``can not``, ``gon na``); quotes (``"`` → `````/``''``, typographic quotes and apostrophes); brackets
  (``-lrb-`` …); dashes (``--``, ``–``, ``—``) and ellipses; the trailing period of single letters, dotted acronyms
  (``u.s.``, ``e.g.``) and of the CoreNLP 3.4.1 abbreviation list (``mr.``, ``st.``, ``rd.``, ``jan.``, ``etc.`` …)
  kept attached. Known divergences from the jar (all rare in captions, all covered by ``mode="java"``): the
  lexer's sentence-boundary heuristics after a period (``"[c]. d."``), SGML/e-mail/URL tokens, currency prefixes
  like ``US$``, runs of two or four and more dots, and British→American spelling (which 3.4.1 does *not* apply).

``mode="auto"`` uses the jar when Java and the jar are available and the Python rules otherwise; the result of
``evaluate_captions`` records which one ran.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from changecap.metrics.java import find_java, java_env, pycocoevalcap_dir

PtbMode = Literal["auto", "java", "python"]

# pycocoevalcap's drop list, verbatim (upper-case bracket names included, see the module docstring).
PUNCTUATIONS: frozenset[str] = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)
PTB_JAR_NAME = "stanford-corenlp-3.4.1.jar"
PTB_CLASS = "edu.stanford.nlp.process.PTBTokenizer"

_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
_OPENERS = frozenset(["-lrb-", "-lsb-", "-lcb-", "``", "`"])

# Abbreviations whose period the 3.4.1 lexer keeps attached (probed against the jar, case-insensitive).
_ABBREVIATION_TEXT = """jan feb mar apr jun jul aug sep sept oct nov dec mon tue wed thu fri
    mr mrs ms messrs dr prof rev hon st sr jr gen col lt sgt capt cmdr adm maj gov sen rep pres
    mt ft ave rd blvd sq bldg dept univ inc co corp ltd bros assn vs etc al cf est ext"""
_ABBREVIATIONS = frozenset(_ABBREVIATION_TEXT.split())
# Capitalised words that make the lexer read "x." (single letter + period) as a sentence end: "b. The" → "b ."
# Probed against the jar: the next chunk must be exactly the word (no punctuation attached), except the titles.
_STARTER_TEXT = """the this that these he she it they we a an there in at but if when what her their our you then
    so as some many one here now however while since after mr. ms."""
_SENTENCE_STARTERS = frozenset(_STARTER_TEXT.split())
# Whole words the lexer splits in two (lower-cased; the split point is kept for capitalised forms too).
_SPLIT_WORDS = {
    "cannot": 3,
    "gonna": 3,
    "gotta": 3,
    "wanna": 3,
    "lemme": 3,
    "gimme": 3,
    "'tis": 2,
    "'twas": 2,
    "y'all": 2,
}
# Clitics split off the end of a word, longest first ("they'd've" → they 'd 've).
_CLITIC = re.compile(r"(?i)^(.*[^\W_])('s|'re|'ve|'ll|'d|'m|n't)$")
_INFIX_N = re.compile(r"(?i)^(.+)('n')(.+)$")  # rock'n'roll
_SINGLE_LETTERS_DOTTED = re.compile(r"^[^\W\d_](?:\.[^\W\d_])*$")  # x | u.s | e.g (before the final period)

# Letters and digits, plus combining accents (decomposed text), minus super/subscripts (PTB splits "km²").
_WORD_CHAR = r"(?:[^\W\u00b2\u00b3\u00b9\u2070-\u209f]|[\u0300-\u036f])"
_TOKEN = re.compile(
    rf"""
    (?P<ellipsis>\.\.\.)
  | (?P<dashes>--+)
  | (?P<bracket>[()\[\]{{}}])
  | (?P<quotes>``|'')
  | (?P<dquote>")
  | (?P<number>\d+(?:[.,:/]\d+)+)                    # 1,000  3.5  10:30  1/2 (a unit after it is split off)
  | (?P<leading>'(?:\d{_WORD_CHAR}*|em|tis|twas|s|re|ve|ll|d|m)(?!{_WORD_CHAR}))  # '90s 'em 'tis 's
  | (?P<acronym>[A-Z]+(?:&[A-Z]+)+)                  # AT&T, S&P stay whole (but a&b → a & b)
  | (?P<word>{_WORD_CHAR}+(?:(?:[-/']|(?<=[^\W\d_])\.){_WORD_CHAR}+)*)  # lower-left and/or it's road.building
                                                   # (a period joins only after a letter: "2.a" → 2 . a)
  | (?P<tag>[#@](?=[^\W\d_]){_WORD_CHAR}+|<[A-Za-z/][^<>\s]*>)  # #hashtag @home <b> (but "#1" → "# 1")
  | (?P<marks>[!?]+)
  | (?P<other>\S)
    """,
    re.VERBOSE,
)
_FRACTION = re.compile(r"^\d+/\d+$")
_SIGNED_NUMBER = re.compile(r"[-+]\d+(?:[.,:/]\d+)*")
# Typographic characters normalised the way PTB3 escaping does.
_TRANSLATE = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201a": "'"})
_UNICODE_PUNCT = [
    ("\u201c", " `` "),
    ("\u201e", " `` "),
    ("\u201d", " '' "),
    ("\u2013", " -- "),
    ("\u2014", " -- "),
    ("\u2015", " -- "),
    ("\u2026", " ... "),
]


def ptb_tokens(text: str) -> list[str]:
    """Tokens of one caption by the Python PTB rules, lower-cased, *before* punctuation removal."""
    text = text.translate(_TRANSLATE)
    for src, dst in _UNICODE_PUNCT:
        if src in text:
            text = text.replace(src, dst)
    out: list[str] = []
    chunks = text.split()
    for i, chunk in enumerate(chunks):
        _tokenize_chunk(chunk, out, chunks[i + 1] if i + 1 < len(chunks) else "")
    # "3 1/2" is one token in PTB3, joined by a no-break space.
    for i in range(len(out) - 1, 0, -1):
        if _FRACTION.match(out[i]) and out[i - 1].isdigit():
            out[i - 1 : i + 1] = [out[i - 1] + "\u00a0" + out[i]]
    return [t.lower() for t in out]


def _tokenize_chunk(chunk: str, out: list[str], next_chunk: str) -> None:
    """Append the tokens of one whitespace-free chunk to ``out`` (``next_chunk``: the following one, or "")."""
    pos = 0
    start_of_chunk = len(out)
    m = _SIGNED_NUMBER.match(chunk)  # "-5", "+5" are numbers only at the start of a chunk
    if m:
        out.append(m.group())
        pos = m.end()
    while pos < len(chunk):
        m = _TOKEN.match(chunk, pos)
        assert m is not None  # "other" matches any non-space character
        kind = m.lastgroup
        tok = m.group()
        pos = m.end()
        if kind == "bracket":
            out.append(_BRACKETS[tok])
        elif kind == "dashes":
            out.append("--")
        elif kind == "dquote":
            opening = len(out) == start_of_chunk or out[-1] in _OPENERS
            out.append("``" if opening else "''")
        elif kind == "other" and tok == "'":
            opening = len(out) == start_of_chunk or out[-1] in _OPENERS
            out.append("`" if opening else "'")
        elif kind == "leading":  # '90s, 'em, 's ... stay whole; 'tis → 't is
            cut = _SPLIT_WORDS.get(tok.lower())
            out += [tok[:cut], tok[cut:]] if cut else [tok]
        elif kind == "word":
            rest = chunk[pos + 1 :] or next_chunk
            if chunk.startswith(".", pos) and _keeps_period(tok, rest):
                tok += "."
                pos += 1
            _split_word(tok, out)
        else:
            out.append(tok)


def _keeps_period(word: str, after: str) -> bool:
    """Whether the period right after ``word`` stays attached (abbreviation) rather than being split off.

    ``after`` is the text following the period; "no." keeps its period only before a number ("no. 5").
    """
    low = word.lower()
    if low == "no":
        return after[:1].isdigit()
    if len(word) == 1 and word.isalpha():
        nxt = after.split(maxsplit=1)[0] if after.strip() else ""
        return not (nxt[:1].isupper() and nxt.lower() in _SENTENCE_STARTERS)
    return bool(_SINGLE_LETTERS_DOTTED.match(word)) or low in _ABBREVIATIONS


def _split_word(word: str, out: list[str]) -> None:
    """Split special words and trailing clitics (``isn't`` → ``is n't``, ``rock'n'roll`` → ``rock 'n' roll``)."""
    cut = _SPLIT_WORDS.get(word.lower())
    if cut:
        out += [word[:cut], word[cut:]]
        return
    m = _INFIX_N.match(word)
    if m:
        out += list(m.groups())
        return
    clitics: list[str] = []
    while m := _CLITIC.match(word):
        word = m.group(1)
        clitics.insert(0, m.group(2))
    out.append(word)
    out += clitics


def ptb_clean(tokens: Sequence[str]) -> str:
    """Drop pycocoevalcap's punctuation tokens and join the rest with single spaces."""
    return " ".join(t for t in tokens if t not in PUNCTUATIONS)


def ptb_tokenize_python(captions: Sequence[str]) -> list[str]:
    """pycocoevalcap-style cleaned token strings, by the Python rules (no Java needed)."""
    return [ptb_clean(ptb_tokens(c)) for c in captions]


# ---------------------------------------------------------------------------------------------------- Java (exact)
def locate_ptb_jar() -> Path | None:
    """The CoreNLP 3.4.1 jar inside the installed pycocoevalcap, or None."""
    base = pycocoevalcap_dir()
    if base is None:
        return None
    jar = base / "tokenizer" / PTB_JAR_NAME
    return jar if jar.is_file() else None


def ptb_availability() -> tuple[bool, str]:
    """Whether the exact (Java) PTB tokenizer can run, and why not."""
    if find_java() is None:
        return False, "no java on PATH"
    if locate_ptb_jar() is None:
        return False, f"{PTB_JAR_NAME} not found (install pycocoevalcap==1.2)"
    return True, ""


# Characters the Java lexer treats as line breaks: inside a caption they would shift every following line
# (pycocoevalcap only replaces "\n"), so we replace them by spaces.
_LINE_BREAKS = str.maketrans({c: " " for c in "\n\r\x0b\x0c\u2028\u2029"})


def ptb_tokenize_java(captions: Sequence[str], timeout: float = 600.0) -> list[str]:
    """pycocoevalcap-style cleaned token strings from the CoreNLP jar, one JVM for all captions.

    Captions are piped on stdin one per line (pycocoevalcap writes a temporary file next to the jar instead, which
    needs a writable site-packages; the tokens are the same).
    """
    ok, reason = ptb_availability()
    if not ok:
        raise RuntimeError(f"PTB tokenizer unavailable: {reason}")
    jar = locate_ptb_jar()
    java = find_java()
    assert jar is not None and java is not None
    if not captions:
        return []
    payload = "\n".join(c.translate(_LINE_BREAKS) for c in captions) + "\n"
    proc = subprocess.run(
        [java, "-cp", str(jar), PTB_CLASS, "-preserveLines", "-lowerCase"],
        input=payload.encode("utf-8"),
        capture_output=True,
        env=java_env(),
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise RuntimeError(f"PTB tokenizer failed (exit {proc.returncode}): {err[-1] if err else 'no message'}")
    lines = proc.stdout.decode("utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline ending the last caption
    if len(lines) != len(captions):
        raise RuntimeError(f"PTB tokenizer returned {len(lines)} lines for {len(captions)} captions")
    return [ptb_clean(line.rstrip().split(" ")) for line in lines]


def ptb_tokenize(captions: Sequence[str], mode: PtbMode = "auto") -> tuple[list[str], str]:
    """Tokenise captions for the ``coco`` protocol.

    Returns the cleaned strings and the name of the implementation used (``"ptb-java"`` or ``"ptb-python"``).
    """
    if mode not in ("auto", "java", "python"):
        raise ValueError(f"mode must be 'auto', 'java' or 'python', got {mode!r}")
    if mode == "java" or (mode == "auto" and ptb_availability()[0]):
        return ptb_tokenize_java(captions), "ptb-java"
    return ptb_tokenize_python(captions), "ptb-python"
