"""Batched greedy and beam-search caption generation (``docs/hisem.md``).

Both searches are written once against a small *stepper* interface (feed one token per hypothesis → logits;
reorder hypotheses; drop finished items) with two implementations:

* :class:`CachedStepper` — the decoder's key/value cache (``init_cache``/``step``), the fast path;
* :class:`NaiveStepper` — recomputes the decoder on the whole prefix each step with the official *inference*
  key-padding mask (``<NULL>`` only), i.e. what the official batch-1 sampler computes. It is the reference the cached
  path is tested against (identical tokens).

Conventions: ``max_length`` is the number of decoding steps = the most positions fed to the decoder (41 in the
paper, the size of the sinusoidal table). As in the official loop, the prediction made at the last position is
still appended, so a sequence holds at most ``max_length + 1`` ids: ``<START>``, then generated ids, ending with
``<END>`` when one was produced. Finished items are dropped from the batch, so later steps only compute the rest.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch

from changecap.data.vocab import END_ID, NULL_ID, START_ID
from changecap.errors import ModelError
from changecap.models.parts.caption_decoder import TransformerCaptionDecoder


class Stepper(Protocol):
    """What the searches need from a decoder."""

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed ``tokens`` [N] (one per live hypothesis) → next-token logits [N, V]."""
        ...

    def reorder(self, hyp_index: torch.Tensor) -> None:
        """Continue with hypotheses ``hyp_index`` [N] (flat, each within its own item)."""
        ...

    def keep_items(self, item_index: torch.Tensor) -> None:
        """Drop every item not in ``item_index`` (with all its hypotheses)."""
        ...


class CachedStepper:
    """Incremental decoding with the decoder's key/value cache."""

    def __init__(self, decoder: TransformerCaptionDecoder, memory: torch.Tensor, group: int) -> None:
        self.decoder = decoder
        self.cache = decoder.init_cache(memory, group)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.decoder.step(tokens, self.cache)

    def reorder(self, hyp_index: torch.Tensor) -> None:
        self.cache.reorder(hyp_index)

    def keep_items(self, item_index: torch.Tensor) -> None:
        self.cache.keep_items(item_index)


class NaiveStepper:
    """Reference: full-prefix recomputation each step (no cache), inference mask = ``<NULL>`` keys only."""

    def __init__(self, decoder: TransformerCaptionDecoder, memory: torch.Tensor, group: int) -> None:
        self.decoder = decoder
        self.group = group
        self.memory = memory  # [items, L, D]
        self.prefix = torch.zeros(memory.shape[0] * group, 0, dtype=torch.long, device=memory.device)  # [N, t]

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        self.prefix = torch.cat([self.prefix, tokens[:, None]], dim=1)  # [N, t+1]
        memory = self.memory.repeat_interleave(self.group, dim=0)  # [N, L, D]
        logits = self.decoder(memory, self.prefix, key_padding_mask=self.prefix == NULL_ID)  # [N, t+1, V]
        return logits[:, -1]  # [N, V]

    def reorder(self, hyp_index: torch.Tensor) -> None:
        self.prefix = self.prefix.index_select(0, hyp_index)

    def keep_items(self, item_index: torch.Tensor) -> None:
        g = self.group
        hyp = (item_index[:, None] * g + torch.arange(g, device=item_index.device)).reshape(-1)  # [items' · g]
        self.prefix = self.prefix.index_select(0, hyp)
        self.memory = self.memory.index_select(0, item_index)


def _make_stepper(
    decoder: TransformerCaptionDecoder, memory: torch.Tensor, group: int, max_length: int, use_cache: bool
) -> Stepper:
    if max_length < 1:
        raise ModelError(f"max_length must be >= 1, got {max_length}")
    if max_length > decoder.max_length:
        raise ModelError(
            f"max_length={max_length} exceeds the decoder's {decoder.max_length} positions (its sinusoidal table)"
        )
    return CachedStepper(decoder, memory, group) if use_cache else NaiveStepper(decoder, memory, group)


@torch.no_grad()
def greedy_search(
    decoder: TransformerCaptionDecoder, memory: torch.Tensor, max_length: int = 41, use_cache: bool = True
) -> list[list[int]]:
    """Greedy decoding of every item of ``memory`` [B, L, D]; each item stops at its own ``<END>``."""
    b = memory.shape[0]
    stepper = _make_stepper(decoder, memory, 1, max_length, use_cache)
    alive = torch.arange(b, device=memory.device)  # original item index of each live row
    history = torch.full((b, 1), START_ID, dtype=torch.long, device=memory.device)  # [n, t]
    results: list[list[int] | None] = [None] * b
    token = history[:, 0]
    for _ in range(max_length):
        nxt = stepper.step(token).argmax(dim=-1)  # [n]
        history = torch.cat([history, nxt[:, None]], dim=1)  # [n, t+1]
        done = nxt == END_ID
        if bool(done.any()):
            for row in done.nonzero().flatten().tolist():
                results[int(alive[row])] = history[row].tolist()
            keep = (~done).nonzero().flatten()  # [n']
            if keep.numel() == 0:
                break
            stepper.keep_items(keep)
            alive, history, nxt = alive[keep], history[keep], nxt[keep]
        token = nxt
    for row, item in enumerate(alive.tolist()):
        if results[item] is None:  # ran out of steps without <END>
            results[item] = history[row].tolist()
    return [r for r in results if r is not None]


@torch.no_grad()
def beam_search(
    decoder: TransformerCaptionDecoder,
    memory: torch.Tensor,
    beam_size: int,
    max_length: int = 41,
    length_penalty: float = 0.0,
    use_cache: bool = True,
) -> list[list[int]]:
    """Beam search over ``memory`` [B, L, D]; returns the best hypothesis per item.

    Scores are summed log-probabilities; a finished hypothesis (ending in ``<END>``) is ranked by
    ``score / n ** length_penalty`` with ``n`` its number of generated ids incl. ``<END>`` (0.0 = no normalisation, as
    the official ``sample_beam``). Each step keeps the ``beam_size`` best non-``<END>`` continuations; an ``<END>``
    continuation ranked within the best ``beam_size`` candidates is finished. An item stops once its best finished
    score cannot be beaten by any live beam: live scores only decrease, so ``live / max_length ** length_penalty``
    bounds every continuation (hence ``length_penalty >= 0`` is required). With ``beam_size=1`` and no length
    penalty this is exactly greedy decoding.
    """
    if beam_size < 1:
        raise ModelError(f"beam_size must be >= 1, got {beam_size}")
    if length_penalty < 0 or not math.isfinite(length_penalty):
        raise ModelError(f"length_penalty must be a finite number >= 0, got {length_penalty}")
    k = beam_size
    b, dev = memory.shape[0], memory.device
    stepper = _make_stepper(decoder, memory, k, max_length, use_cache)
    alive = torch.arange(b, device=dev)  # original item index of each live item
    history = torch.full((b * k, 1), START_ID, dtype=torch.long, device=dev)  # [n·K, t]
    scores = torch.full((b, k), -math.inf, device=dev)  # [n, K]; only beam 0 is live at the start (no duplicates)
    scores[:, 0] = 0.0
    best_score = [-math.inf] * b
    best_seq: list[list[int] | None] = [None] * b
    token = history[:, 0]
    bound_scale = float(max_length) ** length_penalty
    for step in range(max_length):
        n = alive.numel()
        logp = stepper.step(token).float().log_softmax(dim=-1)  # [n·K, V]
        v = logp.shape[-1]
        cand = (scores[:, :, None] + logp.view(n, k, v)).view(n, k * v)  # [n, K·V]
        top_s, top_i = cand.topk(min(2 * k, k * v), dim=-1)  # [n, 2K], best first
        parent, word = top_i // v, top_i % v  # [n, 2K]
        is_end = word == END_ID
        # finished hypotheses: <END> candidates ranked within the best K
        rank = torch.arange(top_s.shape[1], device=dev)
        fin = is_end & (rank < k) & torch.isfinite(top_s)
        fin_score = torch.where(fin, top_s / float(step + 1) ** length_penalty, -math.inf)  # [n, 2K]
        cand_best, cand_pos = fin_score.max(dim=-1)  # [n]
        for row in torch.isfinite(cand_best).nonzero().flatten().tolist():
            item, s = int(alive[row]), float(cand_best[row])
            if s > best_score[item]:
                hyp = row * k + int(parent[row, cand_pos[row]])
                best_score[item], best_seq[item] = s, history[hyp].tolist() + [END_ID]
        # live beams: the K best candidates that are not <END> (stable order keeps the ranking)
        order = torch.argsort(is_end.to(torch.int8), dim=-1, stable=True)[:, :k]  # [n, K]
        scores = top_s.gather(1, order)  # [n, K]
        hyp_index = (torch.arange(n, device=dev)[:, None] * k + parent.gather(1, order)).reshape(-1)  # [n·K]
        token = word.gather(1, order).reshape(-1)  # [n·K]
        history = torch.cat([history.index_select(0, hyp_index), token[:, None]], dim=1)  # [n·K, t+1]
        stepper.reorder(hyp_index)
        # an item is done when no live beam can still beat its best finished hypothesis
        bound = scores.max(dim=-1).values / bound_scale  # [n]
        best = torch.tensor([best_score[i] for i in alive.tolist()], device=dev)  # [n]
        done = best >= bound  # [n]
        if bool(done.any()):
            keep = (~done).nonzero().flatten()  # [n']
            hyp_keep = (keep[:, None] * k + torch.arange(k, device=dev)).reshape(-1)  # [n'·K]
            alive, scores = alive[keep], scores[keep]
            history, token = history[hyp_keep], token[hyp_keep]
            if keep.numel() == 0:
                break
            stepper.keep_items(keep)
    # items that ran out of steps: the best live beam competes with the best finished one
    length = history.shape[1] - 1
    for row, item in enumerate(alive.tolist()):
        s, j = scores[row].max(dim=0)
        live = float(s) / float(length) ** length_penalty
        if best_seq[item] is None or live > best_score[item]:
            best_score[item], best_seq[item] = live, history[row * k + int(j)].tolist()
    return [s if s is not None else [START_ID] for s in best_seq]


def generate(
    decoder: TransformerCaptionDecoder,
    memory: torch.Tensor,
    max_length: int = 41,
    beam_size: int = 1,
    length_penalty: float = 0.0,
    use_cache: bool = True,
) -> list[list[int]]:
    """Greedy when ``beam_size == 1`` and no length penalty, beam search otherwise."""
    if beam_size == 1 and length_penalty == 0.0:
        return greedy_search(decoder, memory, max_length, use_cache=use_cache)
    return beam_search(decoder, memory, beam_size, max_length, length_penalty, use_cache=use_cache)


def word_attention(
    decoder: TransformerCaptionDecoder, memory: torch.Tensor, seqs: list[list[int]]
) -> list[torch.Tensor]:
    """Per caption of ``seqs`` (generated from ``memory`` [B, L, D]), one row per word — each id after ``<START>``
    up to ``<END>``, ``<NULL>`` skipped, i.e. the words ``Vocabulary.decode`` writes — with the decoder's
    cross-attention over the L memory positions while it chose that word
    (:meth:`~changecap.models.parts.caption_decoder.TransformerCaptionDecoder.cross_attention`): float32
    [words, L] each, on ``memory``'s device. One teacher-forced pass over the finished captions, whatever search
    made them."""
    rows: list[list[int]] = []  # per caption, the input positions whose outputs chose its words
    for seq in seqs:
        picked = []
        for i, token in enumerate(seq[1:], start=1):
            if token == END_ID:
                break
            if token not in (NULL_ID, START_ID):
                picked.append(i - 1)
        rows.append(picked)
    length = max((r[-1] + 1 for r in rows if r), default=0)
    if length == 0:
        return [memory.new_zeros(0, memory.shape[1], dtype=torch.float32) for _ in seqs]
    tokens = torch.full((len(seqs), length), NULL_ID, dtype=torch.long, device=memory.device)  # [B, T]
    for b, seq in enumerate(seqs):
        prefix = seq[:length]
        tokens[b, : len(prefix)] = torch.tensor(prefix, dtype=torch.long)
    weights = decoder.cross_attention(memory, tokens)  # [B, T, L]
    return [weights[b, r] for b, r in enumerate(rows)]  # [words, L] each
