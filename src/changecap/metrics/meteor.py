"""METEOR 1.5: the reference jar kept alive in one JVM, and a labelled pure-Python approximation.

Published RSICC and COCO numbers come from ``java -jar -Xmx2G meteor-1.5.jar - - -stdio -l en -norm`` driven the
way coco-caption drives it: for each pair one ``SCORE ||| ref1 ||| … ||| refN ||| hyp`` line returns the
pair's sufficient statistics, then one ``EVAL ||| stats1 ||| … ||| statsN`` line returns the N item scores followed
by the corpus score computed from the *summed* statistics (not the mean of the item scores). The JVM start and the
paraphrase-table load take several seconds, so :class:`MeteorScorer` starts the JVM once and serves any number of
evaluations (and subsets: statistics are computed once per pair and re-aggregated per subset).

When Java, the jar or its paraphrase table is missing, METEOR is *unavailable* and is reported so by the callers,
never silently replaced. :func:`meteor_approx` exists for quick looks without Java and is always labelled
``approx``: its numbers are not comparable with published METEOR.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import subprocess
import tempfile
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, NamedTuple

import numpy as np

from changecap.metrics.java import find_java, java_env, pycocoevalcap_dir
from changecap.metrics.ngrams import check_pairs

METEOR_JAR_ENV = "CHANGECAP_METEOR_JAR"
METEOR_JAR_NAME = "meteor-1.5.jar"
PARAPHRASE_REL = Path("data") / "paraphrase-en.gz"  # METEOR 1.5 looks for it next to the jar
APPROX_LABEL = "approx (not comparable with published numbers)"
JAVA_LABEL = "java meteor-1.5"
_JAR_STATS_LENGTH = 23  # numbers per statistics line of the 1.5 jar
_JAR_CHUNKS = 20  # column of the chunk count


# ----------------------------------------------------------------------------------------------- availability
def locate_meteor_jar() -> tuple[Path | None, str]:
    """``(jar, "")``, or ``(None, reason)``. ``$CHANGECAP_METEOR_JAR`` wins over the pycocoevalcap copy."""
    override = os.environ.get(METEOR_JAR_ENV)
    if override:
        jar = Path(override).expanduser()
        if not jar.is_file():
            return None, f"jar not found: {METEOR_JAR_ENV}={override} does not exist"
        return jar, ""
    base = pycocoevalcap_dir()
    if base is None:
        return None, f"jar not found: set {METEOR_JAR_ENV} or install pycocoevalcap==1.2"
    jar = base / "meteor" / METEOR_JAR_NAME
    if not jar.is_file():
        return None, f"jar not found: {jar} is missing"
    return jar, ""


def meteor_availability() -> tuple[bool, str]:
    """Whether the METEOR 1.5 jar can run here: ``(True, jar path)`` or ``(False, reason)``.

    Reasons: no java on PATH / jar not found / paraphrase data missing.
    """
    if find_java() is None:
        return False, "no java on PATH"
    jar, reason = locate_meteor_jar()
    if jar is None:
        return False, reason
    para = jar.parent / PARAPHRASE_REL
    if not para.is_file():
        return False, f"paraphrase data missing: {para}"
    return True, str(jar)


# ------------------------------------------------------------------------------------------------- the JVM
# The warm-up corpus: sentences drawn (seeded) from words of change captions, so stemming, synonym and paraphrase
# lookups all run. 1,000 pairs: the gain measured with 3,000 was no larger.
_WARMUP_PAIRS = 1000
_WARMUP_WORDS = (
    "the a an of on in at to is are was were there no difference building buildings road roads house houses tree "
    "trees built constructed appear appeared removed replaced new many some two three several small large bare land "
    "area scene scenes identical same before change changed has have been nothing almost left right top bottom side "
    "middle corner near beside along"
)


def _field(text: str) -> str:
    """A caption as one field of the ``|||``-separated protocol: no separator, no line break."""
    return " ".join(text.replace("|||", "").splitlines())


class MeteorScorer:
    """The METEOR 1.5 jar in one long-lived JVM (``with MeteorScorer() as m: m.score(hyps, refs)``).

    Thread-safe (one request at a time). Raises ``RuntimeError`` with the reason when METEOR is unavailable or
    the JVM dies.
    """

    def __init__(
        self, jar: str | os.PathLike[str] | None = None, max_heap: str = "2G", *, warmup: bool = False
    ) -> None:
        if jar is None:
            ok, info = meteor_availability()
            if not ok:
                raise RuntimeError(f"METEOR unavailable: {info}")
            jar_path = Path(info)
        else:
            jar_path = Path(jar)
        java = find_java()
        if java is None:
            raise RuntimeError("METEOR unavailable: no java on PATH")
        self.jar = jar_path
        self._lock = threading.Lock()
        # The JVM's stderr goes to a file that lives as long as the JVM (read back for error messages).
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        # The exact coco-caption command line, run beside the jar so that it finds data/paraphrase-en.gz.
        cmd = [java, "-jar", f"-Xmx{max_heap}", jar_path.name, "-", "-", "-stdio", "-l", "en", "-norm"]
        self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(
            cmd,
            cwd=str(jar_path.parent),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=java_env(),
        )
        self._warmup: threading.Thread | None = None
        if warmup:
            self._warmup = threading.Thread(target=self._warm_up, name="meteor-warmup", daemon=True)
            self._warmup.start()

    def _warm_up(self) -> None:
        """Score a fixed synthetic corpus and throw the answers away, so that the JVM has loaded its tables and
        compiled its hot paths before the first real request (which then waits on the lock). Measured on LEVIR-CC
        test (1,929 pairs): the first real request of a fresh JVM takes about 1.6× as long as on a warmed one
        (benchmarks/bench_meteor.py). A SCORE answer depends only on its own line, so this changes no score."""
        rng = random.Random(0)
        words = _WARMUP_WORDS.split()

        def sentence() -> str:
            return " ".join(rng.choice(words) for _ in range(rng.randint(3, 14)))

        hyps = [sentence() for _ in range(_WARMUP_PAIRS)]
        refs = [[sentence() for _ in range(5)] for _ in range(_WARMUP_PAIRS)]
        with contextlib.suppress(Exception):  # a JVM that fails here fails the first real request, with its reason
            self.score(hyps, refs)

    # -------------------------------------------------------------------- lifecycle
    def __enter__(self) -> MeteorScorer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the JVM (idempotent)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        warmup = self._warmup
        try:
            if warmup is not None and warmup.is_alive():
                proc.kill()  # still loading or warming up: nothing to finish, do not wait for it
            elif proc.stdin:
                proc.stdin.close()
            proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()
        finally:
            if warmup is not None:
                warmup.join(timeout=10)  # ends with the JVM (its read sees end of file)
                self._warmup = None
            if proc.stdout:
                proc.stdout.close()
            self._stderr.close()

    def __del__(self) -> None:  # safety net; use the context manager
        with contextlib.suppress(Exception):  # at interpreter shutdown there is nobody to report to
            self.close()

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -------------------------------------------------------------------- protocol
    def _exchange(self, lines: Sequence[str], n_out: int) -> list[str]:
        """Send ``lines`` and read ``n_out`` answer lines. A writer thread feeds stdin while we read stdout, so
        large batches never dead-lock on full pipe buffers."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            raise RuntimeError(f"METEOR JVM is not running{self._stderr_tail()}")
        assert proc.stdin is not None and proc.stdout is not None
        stdin = proc.stdin
        # Encode everything first: a caption that is not valid Unicode (lone surrogate) must fail here, before a
        # half-sent batch leaves the JVM waiting for input while we wait for its output.
        try:
            payload = [(line + "\n").encode("utf-8") for line in lines]
        except UnicodeEncodeError as e:
            raise ValueError(f"caption is not valid Unicode text ({e.reason} at position {e.start})") from None
        errors: list[BaseException] = []

        def write() -> None:
            try:
                for chunk in payload:
                    stdin.write(chunk)
                stdin.flush()
            except BaseException as e:  # noqa: BLE001 - re-raised in the reading thread
                errors.append(e)

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        out: list[str] = []
        for _ in range(n_out):
            raw = proc.stdout.readline()
            if not raw:
                writer.join(timeout=1)
                raise RuntimeError(f"METEOR JVM exited unexpectedly{self._stderr_tail()}")
            out.append(raw.decode("utf-8").strip())
        writer.join()
        if errors:
            raise RuntimeError(f"writing to the METEOR JVM failed: {errors[0]}")
        return out

    def _stderr_tail(self) -> str:
        try:
            self._stderr.seek(0)
            lines = self._stderr.read().decode("utf-8", "replace").strip().splitlines()
        except (OSError, ValueError):
            return ""
        return f": {lines[-1]}" if lines else ""

    def statistics(self, hyps: Sequence[str], refs: Sequence[Sequence[str]], *, dedup: bool = True) -> list[str]:
        """The jar's sufficient-statistics line of each pair (``SCORE`` requests).

        The hypothesis is cleaned exactly as coco-caption does (``|||`` removed, double spaces once replaced);
        references only lose ``|||`` and line breaks, which would otherwise break the protocol.

        Identical requests are sent once (``dedup=False`` sends every line, as coco-caption does): a SCORE answer
        depends only on its line, and in RSICC splits half the pairs share the same five no-change references, so a
        model that answers them with the same sentence repeats one request hundreds of times.
        """
        check_pairs(hyps, refs)
        lines = []
        for hyp, rs in zip(hyps, refs):
            h = _field(hyp.replace("|||", "").replace("  ", " "))
            lines.append(" ||| ".join(["SCORE", " ||| ".join(_field(r) for r in rs), h]))
        unique = list(dict.fromkeys(lines)) if dedup else lines  # first occurrences, in order
        with self._lock:
            answers = dict(zip(unique, self._exchange(unique, len(unique)), strict=True))
        return [answers[line] for line in lines]

    def evaluate(self, stats: Sequence[str]) -> tuple[float, list[float]]:
        """Corpus METEOR (from summed statistics) and item scores for previously computed statistics."""
        if not stats:
            raise ValueError("no METEOR statistics to evaluate")
        line = "EVAL ||| " + " ||| ".join(stats)
        with self._lock:
            out = self._exchange([line], len(stats) + 1)
        try:
            values = [float(x) for x in out]
        except ValueError as e:
            raise RuntimeError(f"unexpected answer from the METEOR jar: {e}") from None
        return values[-1], values[:-1]

    def evaluate_sums(self, sums: np.ndarray) -> np.ndarray:
        """Corpus METEOR of each row of already summed statistics ``[R, 23]`` (:func:`meteor_stats_array` rows
        summed over a corpus, e.g. one row per bootstrap resample): one ``EVAL`` line of one statistics entry per
        row, all sent in one exchange."""
        rows = np.atleast_2d(np.asarray(sums, dtype=np.float64))  # [R, 23]
        if rows.shape[0] == 0:
            return np.zeros(0)
        lines = ["EVAL ||| " + " ".join(np.format_float_positional(x, trim="-") for x in row) for row in rows]
        with self._lock:
            out = self._exchange(lines, 2 * len(lines))  # per line: the item score, then the corpus score
        try:
            return np.array([float(x) for x in out[1::2]])
        except ValueError as e:
            raise RuntimeError(f"unexpected answer from the METEOR jar: {e}") from None

    def score(self, hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> tuple[float, list[float]]:
        """Corpus and per-item METEOR, equal to ``pycocoevalcap.meteor.Meteor().compute_score``."""
        return self.evaluate(self.statistics(hyps, refs))


def meteor_stats_array(stats: Sequence[str]) -> np.ndarray:
    """The jar's per-pair statistics lines as a float array ``[N, 23]`` whose column sums are the jar's corpus
    aggregate: the jar adds every field, except that a pair matched completely in one chunk adds no chunk (its
    ``MeteorStats.addStats``), so that pair's chunk count is zeroed here. Summing rows of this array over any subset
    or resample of the pairs and scoring the sums with :meth:`MeteorScorer.evaluate_sums` gives the jar's corpus
    METEOR of that subset."""
    arr = np.array([[float(x) for x in line.split()] for line in stats], dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != _JAR_STATS_LENGTH:
        raise RuntimeError(f"unexpected METEOR statistics: expected {_JAR_STATS_LENGTH} numbers per line")
    # tstLen refLen tstFunc refFunc, then (tst, ref) × (content, function) matches of 4 stages, chunks, word matches
    test_matches = arr[:, 4:20:2].sum(axis=1)
    ref_matches = arr[:, 5:20:2].sum(axis=1)
    perfect = (test_matches == arr[:, 0]) & (ref_matches == arr[:, 1]) & (arr[:, _JAR_CHUNKS] == 1.0)
    arr[perfect, _JAR_CHUNKS] = 0.0
    return arr


def meteor_approx_stats_array(stats: Sequence[ApproxStats]) -> np.ndarray:
    """Approximate-METEOR statistics as a float array ``[N, 4]`` (summable, scored by :func:`approx_from_sums`)."""
    return np.array([tuple(st) for st in stats], dtype=np.float64).reshape(len(stats), 4)


def approx_from_sums(sums: np.ndarray) -> np.ndarray:
    """:func:`approx_score` of each row of summed approximate statistics ``[..., 4]``, vectorised."""
    hyp_len, ref_len, matches, chunks = (sums[..., i] for i in range(4))
    with np.errstate(divide="ignore", invalid="ignore"):
        p = matches / hyp_len
        r = matches / ref_len
        fmean = p * r / (APPROX_ALPHA * p + (1 - APPROX_ALPHA) * r)
        perfect = (matches == hyp_len) & (hyp_len == ref_len) & (chunks == 1)
        frag = np.where(perfect, 0.0, chunks / matches)
        score = fmean * (1 - APPROX_GAMMA * frag**APPROX_BETA)
    return np.where(matches == 0, 0.0, score)


# ------------------------------------------------------------------------------------------ approximation
# METEOR 1.5 parameters of the 'en' task (-l en): alpha, beta, gamma, delta.
APPROX_ALPHA, APPROX_BETA, APPROX_GAMMA, APPROX_DELTA = 0.85, 0.2, 0.6, 0.75
_APPROX_TOKEN = re.compile(r"\w+(?:[-'.]\w+)*|[^\w\s]")


class ApproxStats(NamedTuple):
    """Alignment statistics of one hypothesis against one reference (summable over a corpus)."""

    hyp_len: int
    ref_len: int
    matches: int
    chunks: int


def _approx_tokens(text: str) -> list[str]:
    """Lower-case and split punctuation off, a rough stand-in for the jar's ``-norm``."""
    return _APPROX_TOKEN.findall(text.lower())


def approx_align(hyp: Sequence[str], ref: Sequence[str]) -> ApproxStats:
    """Exact-match unigram alignment with a greedy chunk-aware choice.

    Every hypothesis word takes an unused identical reference word (so the number of matches is maximal),
    preferring, in order: the position right after the previous match (extends the chunk), the position that starts
    the longest run of further matching words, a position after the previous match, the earliest one. The jar
    instead searches the alignments for the fewest chunks and also matches stems, synonyms and paraphrases.
    """
    positions: dict[str, list[int]] = {}
    for j, w in enumerate(ref):
        positions.setdefault(w, []).append(j)
    used: set[int] = set()

    def run_length(i: int, j: int) -> int:
        k = 0
        while i + k < len(hyp) and j + k < len(ref) and hyp[i + k] == ref[j + k] and (j + k) not in used:
            k += 1
        return k

    matches = 0
    chunks = 0
    prev_i = prev_j = -2
    for i, w in enumerate(hyp):
        free = [j for j in positions.get(w, ()) if j not in used]
        if not free:
            continue
        j = max(free, key=lambda c: (c == prev_j + 1, run_length(i, c), c > prev_j, -c))
        used.add(j)
        matches += 1
        if not (i == prev_i + 1 and j == prev_j + 1):
            chunks += 1
        prev_i, prev_j = i, j
    return ApproxStats(len(hyp), len(ref), matches, chunks)


def approx_score(st: ApproxStats) -> float:
    """METEOR formula on (summed) statistics.

    Every word counts as a content word (we ship no function-word list), so the delta weighting cancels out. As in
    METEOR 1.5 the fragmentation penalty is 0 when hypothesis and reference match completely in one chunk.
    """
    if st.matches == 0:
        return 0.0
    p = st.matches / st.hyp_len
    r = st.matches / st.ref_len
    fmean = p * r / (APPROX_ALPHA * p + (1 - APPROX_ALPHA) * r)
    if st.matches == st.hyp_len == st.ref_len and st.chunks == 1:
        frag = 0.0
    else:
        frag = st.chunks / st.matches
    penalty = APPROX_GAMMA * frag**APPROX_BETA
    return fmean * (1 - penalty)


def _sum_stats(stats: Iterable[ApproxStats]) -> ApproxStats:
    h = r = m = c = 0
    for st in stats:
        h, r, m, c = h + st.hyp_len, r + st.ref_len, m + st.matches, c + st.chunks
    return ApproxStats(h, r, m, c)


def meteor_approx_statistics(hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> list[ApproxStats]:
    """Per pair, the statistics of the best-scoring reference (what the jar keeps per segment)."""
    check_pairs(hyps, refs)
    out: list[ApproxStats] = []
    for hyp, rs in zip(hyps, refs):
        h = _approx_tokens(hyp)
        candidates = [approx_align(h, _approx_tokens(r)) for r in rs]
        out.append(max(candidates, key=approx_score))
    return out


def meteor_approx_evaluate(stats: Sequence[ApproxStats]) -> tuple[float, list[float]]:
    """Corpus score from summed statistics, and item scores."""
    if not stats:
        raise ValueError("no METEOR statistics to evaluate")
    return approx_score(_sum_stats(stats)), [approx_score(st) for st in stats]


def meteor_approx(hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> tuple[float, list[float]]:
    """Approximate METEOR (exact matches only); label results with :data:`APPROX_LABEL`."""
    return meteor_approx_evaluate(meteor_approx_statistics(hyps, refs))
