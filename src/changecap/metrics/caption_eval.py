"""``evaluate_captions``: the full caption evaluation with protocols, breakdown and readable output.

Protocols (how strings are prepared before the coco scorers):

* ``rsicc`` (default, reproduces published LEVIR-CC numbers): RSICC tokenisation (``changecap.data.tokenize``),
  then vocabulary id strings (``Vocabulary.id_string``: specials removed, ``<UNK>`` kept), e.g. ``"88 496 174"``.
  Needs the vocabulary the model was trained with; without one we build one from the references (every word,
  threshold 0) and say so in the result - published numbers need the legacy vocabulary.
* ``coco``: pycocoevalcap's PTB tokenisation and punctuation removal, then word strings.
* ``none``: strings as given (the scorers split on spaces).

Changed / unchanged breakdown: a pair is *unchanged* when **all** its references are no-change
sentences (``changecap.data.text.is_no_change`` on the raw reference text). The peers test one reference (RSICC the
2nd, Chg2Cap the 1st); on LEVIR-CC no pair mixes change and no-change references, so the rules agree there, and
"all" never calls a pair unchanged because of one stray reference. Each subset is scored as its own corpus (its
own BLEU brevity penalty, CIDEr-D idf and METEOR aggregate); ``nochange_acc`` is the share of unchanged pairs whose
hypothesis is a no-change sentence and ``change_acc`` the share of changed pairs whose hypothesis is not.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from changecap.data.text import is_no_change
from changecap.data.vocab import Vocabulary
from changecap.errors import DataError
from changecap.metrics.bleu import bleu
from changecap.metrics.cider import cider_d
from changecap.metrics.embedding import EMBEDDING_KEY, Embedder, embedding_similarity
from changecap.metrics.meteor import (
    APPROX_LABEL,
    JAVA_LABEL,
    ApproxStats,
    MeteorScorer,
    meteor_approx_evaluate,
    meteor_approx_statistics,
    meteor_availability,
)
from changecap.metrics.ngrams import NgramCache
from changecap.metrics.ptb import PtbMode, ptb_tokenize
from changecap.metrics.rouge import rouge_l

CaptionProtocol = Literal["rsicc", "coco", "none"]
MeteorMode = Literal["java", "approx", "off"]

METRIC_KEYS: tuple[str, ...] = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")
SCORE_KEYS: tuple[str, ...] = (*METRIC_KEYS, "S_m")
SINGLE_PAIR_CIDER_NOTE = (
    "CIDEr-D of a set of one pair is 0 by the coco definition (idf = log 1 - log 1 = 0), as pycocoevalcap returns"
)
SUBSET_CIDER_CAVEAT = (
    "subset CIDEr is computed with idf from the subset's own references: it is not comparable with full-set CIDEr, "
    "and the unchanged subset (all pairs share the same references, idf ~ 0) scores ~0 whatever the captions"
)
S_M_NOTE = "S_m = (Bleu_4 + METEOR + ROUGE_L + CIDEr) / 4 from the unrounded scores"
EMBEDDING_NOTE = (
    f"{EMBEDDING_KEY}: best cosine similarity of the hypothesis to a reference under a sentence encoder, averaged "
    "over pairs; depends on the encoder, not a published RSICC metric"
)
BUILT_VOCAB_NOTE = (
    "rsicc protocol without --vocab: the vocabulary was built from the references (threshold 0); published "
    "LEVIR-CC numbers need the legacy vocabulary the model was trained with"
)


@dataclass
class SubsetResult:
    """Scores of one subset (changed / unchanged), scored as its own corpus."""

    n: int
    scores: dict[str, float | None]


@dataclass
class CaptionEvalResult:
    """Outcome of :func:`evaluate_captions`. Scores are fractions (CIDEr ~ 1.4); papers print them × 100."""

    scores: dict[str, float | None]
    n: int
    protocol: str
    tokenizer: str
    meteor_impl: str | None  # JAVA_LABEL, APPROX_LABEL, or None when METEOR is off / unavailable
    unavailable: dict[str, str] = field(default_factory=dict)  # metric → reason (value is None)
    notes: list[str] = field(default_factory=list)
    subsets: dict[str, SubsetResult] = field(default_factory=dict)
    nochange_acc: float | None = None
    change_acc: float | None = None
    caveats: list[str] = field(default_factory=list)
    per_item: dict[str, dict[str, float | None]] | None = None
    # the optional embedding similarity, beside the standard scores: {"model", "all", "changed", "unchanged"}
    embedding: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (``METEOR_impl`` names the METEOR implementation, as in the scores' labels)."""
        out: dict[str, Any] = {
            "protocol": self.protocol,
            "n": self.n,
            "scores": dict(self.scores),
            "METEOR_impl": self.meteor_impl,
            "tokenizer": self.tokenizer,
            "unavailable": dict(self.unavailable),
            "notes": list(self.notes),
        }
        if self.subsets:
            out["subsets"] = {k: {"n": v.n, "scores": dict(v.scores)} for k, v in self.subsets.items()}
            out["nochange_acc"] = self.nochange_acc
            out["change_acc"] = self.change_acc
        out["caveats"] = list(self.caveats)
        if self.embedding is not None:
            out["embedding_similarity"] = dict(self.embedding) | {"note": EMBEDDING_NOTE}
        if self.per_item is not None:
            out["per_item"] = {k: dict(v) for k, v in self.per_item.items()}
        return out

    def format_table(self) -> str:
        """Readable text table, scores × 100 as in papers, with the breakdown and every note and caveat."""
        cols = ["all"] + [name for name in ("changed", "unchanged") if name in self.subsets]
        colw = 10
        lines = [f"caption metrics: protocol {self.protocol}, {self.n} pairs, tokens: {self.tokenizer}, scores x100"]
        lines.append(f"{'metric':<10}" + "".join(f"{c:>{colw}}" for c in cols))
        for key in SCORE_KEYS:
            row = f"{key:<10}"
            for c in cols:
                value = self.scores.get(key) if c == "all" else self.subsets[c].scores.get(key)
                cell = "n/a" if value is None else f"{100 * value:.2f}"
                if c != "all" and key in ("CIDEr", "S_m") and value is not None:
                    cell += "*"
                row += f"{cell:>{colw}}"
            lines.append(row)
        if self.embedding is not None:
            cells = [self.embedding.get(c) for c in cols]
            lines.append(f"{EMBEDDING_KEY + '+':<10}" + "".join(f"{_pct(v):>{colw}}" for v in cells))
        lines.append(f"{'pairs':<10}" + "".join(f"{self._n_of(c):>{colw}}" for c in cols))
        if self.subsets:
            lines.append(f"nochange_acc {_pct(self.nochange_acc)}   change_acc {_pct(self.change_acc)}")
        if self.meteor_impl:
            lines.append(f"METEOR: {self.meteor_impl}")
        for metric, reason in self.unavailable.items():
            lines.append(f"{metric} unavailable: {reason}")
        lines += [f"note: {n}" for n in self.notes]
        lines += [f"* {c}" for c in self.caveats]
        if self.embedding is not None:
            lines.append(f"+ {EMBEDDING_NOTE}; encoder: {self.embedding['model']}")
        return "\n".join(lines)

    def _n_of(self, col: str) -> int:
        return self.n if col == "all" else self.subsets[col].n


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}"


# --------------------------------------------------------------------------------------------- file input
def load_caption_json(path: str | os.PathLike[str], kind: Literal["pred", "refs"] = "pred") -> dict[str, Any]:
    """Read and validate ``{id: caption}`` (``kind="pred"``) or ``{id: [captions]}`` (``kind="refs"``).

    A prediction may also be a one-element list (pycocoevalcap's result layout). Errors are one-line
    :class:`DataError` naming the file and the id.
    """
    if kind not in ("pred", "refs"):
        raise ValueError(f"kind must be 'pred' or 'refs', got {kind!r}")
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(p, "file not found") from None
    except IsADirectoryError:
        raise DataError(p, "is a directory, expected a JSON file") from None
    except UnicodeDecodeError as e:
        raise DataError(p, f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise DataError(p, f"not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    shape = "{id: caption}" if kind == "pred" else "{id: [caption, ...]}"
    if not isinstance(data, dict):
        raise DataError(p, f"expected a JSON object {shape}, got {type(data).__name__}")
    if not data:
        raise DataError(p, f"no captions (empty object), expected {shape}")
    out: dict[str, Any] = {}
    for key, value in data.items():
        if kind == "pred":
            if isinstance(value, list) and len(value) == 1:
                value = value[0]
            if not isinstance(value, str):
                raise DataError(p, f"prediction must be a string, got {_type_name(value)}", field=key)
            out[key] = value
        else:
            out[key] = _check_ref_list(value, p, key)
    return out


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _check_ref_list(value: object, path: Path | None, key: str) -> list[str]:
    if not isinstance(value, list):
        raise DataError(path, f"references must be a list of strings, got {_type_name(value)}", field=key)
    if not value:
        raise DataError(path, "reference list is empty", field=key)
    for i, r in enumerate(value):
        if not isinstance(r, str):
            raise DataError(path, f"reference must be a string, got {_type_name(r)}", field=f"{key}[{i}]")
    return list(value)


def _check_unicode(text: str, path: Path | None, key: str) -> None:
    """JSON may carry lone surrogates (``"\\ud800"``); the Java scorers cannot receive them."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise DataError(path, f"caption is not valid Unicode ({e.reason} at position {e.start})", field=key) from None


def _validate(
    preds: Mapping[str, str],
    refs: Mapping[str, Sequence[str]],
    pred_path: str | os.PathLike[str] | None,
    refs_path: str | os.PathLike[str] | None,
) -> list[str]:
    """Check the two mappings against each other; return the ids in reference order."""
    pp = None if pred_path is None else Path(pred_path)
    rp = None if refs_path is None else Path(refs_path)
    if not isinstance(preds, Mapping):
        raise DataError(pp, f"predictions must be a mapping {{id: caption}}, got {type(preds).__name__}")
    if not isinstance(refs, Mapping):
        raise DataError(rp, f"references must be a mapping {{id: [captions]}}, got {type(refs).__name__}")
    if not preds:
        raise DataError(pp, "no predictions")
    for key, value in preds.items():
        if not isinstance(value, str):
            raise DataError(pp, f"prediction must be a string, got {_type_name(value)}", field=str(key))
        _check_unicode(value, pp, str(key))
    for key, value in refs.items():
        for i, r in enumerate(_check_ref_list(value, rp, str(key))):
            _check_unicode(r, rp, f"{key}[{i}]")
    extra = [k for k in preds if k not in refs]
    if extra:
        where = rp or "the references"
        raise DataError(pp, f"{len(extra)} prediction id(s) not in {where} (first: {extra[0]!r})", field=str(extra[0]))
    missing = [k for k in refs if k not in preds]
    if missing:
        where = rp or "the references"
        raise DataError(
            pp, f"{len(missing)} id(s) of {where} have no prediction (first: {missing[0]!r})", field=str(missing[0])
        )
    return list(refs)


# ------------------------------------------------------------------------------------------ METEOR session
@contextlib.contextmanager
def meteor_session(mode: MeteorMode | MeteorScorer) -> Iterator[MeteorMode | MeteorScorer]:
    """Start the METEOR JVM *now*, in the background, and hand it to every :func:`evaluate_captions` call inside.

    The JVM needs several seconds to load its paraphrase table and to compile its hot paths (a warm-up corpus is
    scored and discarded); opened before the captions are generated, both overlap the model's work instead of
    adding to it, and one JVM serves every protocol and subset. Yields
    a running :class:`MeteorScorer` for ``java`` when the jar can run, else ``mode`` unchanged (so the caller's
    ``evaluate_captions`` reports METEOR unavailable with its reason, as without a session). A scorer passed in is
    yielded as is and left running. The JVM started here is stopped on exit.
    """
    if mode != "java":
        yield mode
        return
    try:
        scorer = MeteorScorer(warmup=True)  # returns at once: the JVM loads and warms up while the caller works
    except RuntimeError:  # no java, no jar, no paraphrase table (MeteorScorer checks them)
        yield mode
        return
    with scorer:
        yield scorer


# --------------------------------------------------------------------------------------------- evaluation
def evaluate_captions(
    preds: Mapping[str, str],
    refs: Mapping[str, Sequence[str]],
    protocol: CaptionProtocol = "rsicc",
    vocab: Vocabulary | None = None,
    meteor: MeteorMode | MeteorScorer = "java",
    per_item: bool = False,
    breakdown: bool = True,
    *,
    ptb: PtbMode = "auto",
    pred_path: str | os.PathLike[str] | None = None,
    refs_path: str | os.PathLike[str] | None = None,
    embed: Embedder | None = None,
    embed_label: str = "embedding model",
) -> CaptionEvalResult:
    """Score predictions against references with BLEU-1..4, METEOR, ROUGE-L, CIDEr-D and S_m.

    Args:
        preds: ``{id: hypothesis}`` (one hypothesis per pair).
        refs: ``{id: [reference, ...]}``; ids must match ``preds`` exactly.
        protocol: ``rsicc`` / ``coco`` / ``none`` (module docstring).
        vocab: vocabulary for ``rsicc`` id strings.
        meteor: ``java`` (reference jar; reported unavailable with the reason when it cannot run), ``approx``
            (labelled pure-Python approximation), ``off``, or a running :class:`MeteorScorer` to reuse.
        per_item: also return every pair's scores.
        breakdown: also score the changed / unchanged subsets and the no-change accuracies.
        ptb: PTB implementation for ``coco`` (``auto`` = the jar when Java is available).
        pred_path, refs_path: file names used in error messages (set by the CLI / ``load_caption_json`` users).
        embed: a sentence encoder ``texts -> [len(texts), d]``: adds the embedding similarity
            (:mod:`changecap.metrics.embedding`, on the captions as written), labelled ``embed_label``, beside the
            standard scores (``result.embedding``).
    """
    if protocol not in ("rsicc", "coco", "none"):
        raise ValueError(f"protocol must be 'rsicc', 'coco' or 'none', got {protocol!r}")
    if not isinstance(meteor, MeteorScorer) and meteor not in ("java", "approx", "off"):
        raise ValueError(f"meteor must be 'java', 'approx', 'off' or a MeteorScorer, got {meteor!r}")
    ids = _validate(preds, refs, pred_path, refs_path)
    raw_hyps = [preds[i] for i in ids]
    raw_refs = [list(refs[i]) for i in ids]

    notes: list[str] = []
    hyps, ref_strs, tokenizer = _prepare(raw_hyps, raw_refs, protocol, vocab, ptb, notes)

    unavailable: dict[str, str] = {}
    meteor_impl: str | None = None
    meteor_subset: _MeteorSubsetScorer | None = None
    scorer: MeteorScorer | None = None
    own_scorer = False
    if isinstance(meteor, MeteorScorer):
        scorer = meteor
    elif meteor == "java":
        ok, info = meteor_availability()
        if ok:
            try:
                scorer = MeteorScorer()
                own_scorer = True
            except RuntimeError as e:
                unavailable["METEOR"] = str(e)
        else:
            unavailable["METEOR"] = info
    elif meteor == "off":
        unavailable["METEOR"] = "disabled (meteor='off')"
    try:
        if scorer is not None:
            try:
                meteor_subset = _JavaMeteor(scorer, hyps, ref_strs)
                meteor_impl = JAVA_LABEL
            except RuntimeError as e:
                unavailable["METEOR"] = str(e)
        elif meteor == "approx":
            meteor_subset = _ApproxMeteor(hyps, ref_strs)
            meteor_impl = APPROX_LABEL
        if "METEOR" in unavailable:
            unavailable["S_m"] = f"needs METEOR ({unavailable['METEOR']})"

        cache = NgramCache(4)
        all_idx = list(range(len(ids)))
        scores, items = _score_subset(all_idx, hyps, ref_strs, cache, meteor_subset)
        notes.append(S_M_NOTE)

        result = CaptionEvalResult(
            scores=scores,
            n=len(ids),
            protocol=protocol,
            tokenizer=tokenizer,
            meteor_impl=meteor_impl,
            unavailable=unavailable,
            notes=notes,
        )
        if breakdown:
            unchanged = [all(is_no_change(r) for r in rs) for rs in raw_refs]
            for name, flag in (("changed", False), ("unchanged", True)):
                idx = [i for i in all_idx if unchanged[i] == flag]
                sub_scores = (
                    _score_subset(idx, hyps, ref_strs, cache, meteor_subset)[0] if idx else dict.fromkeys(SCORE_KEYS)
                )
                result.subsets[name] = SubsetResult(n=len(idx), scores=sub_scores)
            hyp_nc = [is_no_change(h) for h in raw_hyps]
            n_unch = sum(unchanged)
            n_ch = len(ids) - n_unch
            result.nochange_acc = sum(h for h, u in zip(hyp_nc, unchanged) if u) / n_unch if n_unch else None
            result.change_acc = sum(not h for h, u in zip(hyp_nc, unchanged) if not u) / n_ch if n_ch else None
            result.caveats.append(SUBSET_CIDER_CAVEAT)
        if result.n == 1 or any(sub.n == 1 for sub in result.subsets.values()):
            result.notes.append(SINGLE_PAIR_CIDER_NOTE)
        emb_items: list[float] | None = None
        if embed is not None:
            emb_all, emb_items = embedding_similarity(raw_hyps, raw_refs, embed)
            result.embedding = {"model": embed_label, "all": emb_all}
            if breakdown:
                for name, flag in (("changed", False), ("unchanged", True)):
                    vals = [v for v, u in zip(emb_items, unchanged) if u == flag]
                    result.embedding[name] = sum(vals) / len(vals) if vals else None
        if per_item:
            result.per_item = {str(ids[i]): {k: items[k][i] for k in METRIC_KEYS} for i in all_idx}
            if emb_items is not None:
                for i in all_idx:
                    result.per_item[str(ids[i])][EMBEDDING_KEY] = emb_items[i]
        return result
    finally:
        if own_scorer and scorer is not None:
            scorer.close()


def _prepare(
    raw_hyps: list[str],
    raw_refs: list[list[str]],
    protocol: CaptionProtocol,
    vocab: Vocabulary | None,
    ptb: PtbMode,
    notes: list[str],
) -> tuple[list[str], list[list[str]], str]:
    """Turn raw captions into the strings the scorers see, per protocol; returns the tokenizer's name too."""
    (hyps,), ref_strs, tokenizer = prepare_captions([raw_hyps], raw_refs, protocol, vocab, ptb, notes)
    return hyps, ref_strs, tokenizer


def prepare_captions(
    hyp_lists: Sequence[Sequence[str]],
    raw_refs: Sequence[Sequence[str]],
    protocol: CaptionProtocol,
    vocab: Vocabulary | None = None,
    ptb: PtbMode = "auto",
    notes: list[str] | None = None,
) -> tuple[list[list[str]], list[list[str]], str]:
    """The strings the scorers see under ``protocol``, for several hypothesis lists against the same references
    (one list per system or run): ``(hypothesis lists, reference lists, tokenizer name)``.

    Each caption is prepared on its own, so the strings equal those :func:`evaluate_captions` scores; the
    references are prepared once. Notes (PTB fallback, vocabulary built from the references) go to ``notes``.
    """
    notes = [] if notes is None else notes
    raw_lists = [list(h) for h in hyp_lists]
    refs_l = [list(rs) for rs in raw_refs]
    if protocol == "none":
        return raw_lists, refs_l, "none (strings as given)"
    if protocol == "coco":
        flat = [h for hyps in raw_lists for h in hyps] + [r for rs in refs_l for r in rs]
        toks, impl = ptb_tokenize(flat, ptb)
        if impl == "ptb-python":
            notes.append("PTB tokenisation by the Python rules (Java or the CoreNLP jar unavailable)")
        pos = 0
        hyp_out: list[list[str]] = []
        for hyps in raw_lists:
            hyp_out.append(toks[pos : pos + len(hyps)])
            pos += len(hyps)
        ref_strs: list[list[str]] = []
        for rs in refs_l:
            ref_strs.append(toks[pos : pos + len(rs)])
            pos += len(rs)
        return hyp_out, ref_strs, impl
    if vocab is None:
        vocab = Vocabulary.from_captions((r for rs in refs_l for r in rs), threshold=0, rule="gt")
        notes.append(BUILT_VOCAB_NOTE)
    return (
        [[vocab.id_string(h) for h in hyps] for hyps in raw_lists],
        [[vocab.id_string(r) for r in rs] for rs in refs_l],
        f"rsicc vocabulary ids ({len(vocab)} entries)",
    )


class _MeteorSubsetScorer(Protocol):
    """METEOR statistics computed once per pair; any subset (or the full set) is aggregated from them."""

    def evaluate(self, idx: Sequence[int]) -> tuple[float, list[float]]: ...


class _JavaMeteor:
    def __init__(self, scorer: MeteorScorer, hyps: list[str], refs: list[list[str]]) -> None:
        self.scorer = scorer
        self.stats = scorer.statistics(hyps, refs)

    def evaluate(self, idx: Sequence[int]) -> tuple[float, list[float]]:
        return self.scorer.evaluate([self.stats[i] for i in idx])


class _ApproxMeteor:
    def __init__(self, hyps: list[str], refs: list[list[str]]) -> None:
        self.stats: list[ApproxStats] = meteor_approx_statistics(hyps, refs)

    def evaluate(self, idx: Sequence[int]) -> tuple[float, list[float]]:
        return meteor_approx_evaluate([self.stats[i] for i in idx])


def _score_subset(
    idx: Sequence[int],
    hyps: list[str],
    refs: list[list[str]],
    cache: NgramCache,
    meteor: _MeteorSubsetScorer | None,
) -> tuple[dict[str, float | None], dict[str, list[float | None]]]:
    """Score the pairs ``idx`` as one corpus: corpus scores and per-item lists (aligned with ``idx``)."""
    h = [hyps[i] for i in idx]
    r = [refs[i] for i in idx]
    b_corpus, b_items = bleu(h, r, cache=cache)
    rl_corpus, rl_items = rouge_l(h, r)
    c_corpus, c_items = cider_d(h, r, cache=cache)
    m_corpus: float | None = None
    m_items: list[float | None] = [None] * len(idx)
    if meteor is not None:
        m_corpus, m_values = meteor.evaluate(idx)
        m_items = list(m_values)
    scores: dict[str, float | None] = {f"Bleu_{k + 1}": b_corpus[k] for k in range(4)}
    scores.update({"METEOR": m_corpus, "ROUGE_L": rl_corpus, "CIDEr": c_corpus})
    scores["S_m"] = None if m_corpus is None else (b_corpus[3] + m_corpus + rl_corpus + c_corpus) / 4
    items: dict[str, list[float | None]] = {f"Bleu_{k + 1}": list(b_items[k]) for k in range(4)}
    items.update({"METEOR": m_items, "ROUGE_L": list(rl_items), "CIDEr": list(c_items)})
    return scores, items
