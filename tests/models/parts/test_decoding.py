"""Greedy and beam search: cached == naive, beam 1 == greedy, exact search with a wide beam, stopping, errors."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from changecap.data.vocab import END_ID, NULL_ID, START_ID
from changecap.errors import ModelError
from changecap.models.parts.caption_decoder import CaptionDecoderConfig, TransformerCaptionDecoder
from changecap.models.parts.decoding import beam_search, generate, greedy_search, word_attention

D, H, L = 32, 4, 6


def _decoder(vocab: int = 14, max_length: int = 10, seed: int = 0, end_bias: float = 3.0) -> TransformerCaptionDecoder:
    """A random decoder with peaky outputs (so captions depend on the memory) and a tunable <END> rate."""
    torch.manual_seed(seed)
    dec = TransformerCaptionDecoder(CaptionDecoderConfig(D, vocab, max_length=max_length, layers=2, heads=H)).eval()
    with torch.no_grad():
        dec.output_proj.weight.mul_(5)
        dec.output_proj.bias[END_ID] = end_bias
    return dec


def _memory(b: int, seed: int) -> torch.Tensor:
    return torch.randn(b, L, D, generator=torch.Generator().manual_seed(seed)) * 3


def _check_well_formed(seqs: list[list[int]], max_length: int) -> None:
    for s in seqs:
        assert s[0] == START_ID and 2 <= len(s) <= max_length + 1
        assert END_ID not in s[1:-1]  # at most one <END>, always last
        assert s[-1] == END_ID or len(s) == max_length + 1


@pytest.mark.parametrize("batch", [1, 3, 6])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_greedy_cached_equals_naive(batch: int, seed: int) -> None:
    dec = _decoder(seed=seed)
    memory = _memory(batch, seed)
    cached = greedy_search(dec, memory, 10)
    assert cached == greedy_search(dec, memory, 10, use_cache=False)
    _check_well_formed(cached, 10)


def test_greedy_items_stop_independently() -> None:
    dec = _decoder(seed=0)
    seqs = greedy_search(dec, _memory(6, 0), 10)
    lengths = {len(s) for s in seqs}
    assert len(lengths) > 1, "test needs captions of different lengths"
    for i, s in enumerate(seqs):  # batched result == one item at a time (what the official batch-1 loop does)
        assert greedy_search(dec, _memory(6, 0)[i : i + 1], 10) == [s]


@pytest.mark.parametrize("beam", [2, 3])
@pytest.mark.parametrize("length_penalty", [0.0, 0.7])
@pytest.mark.parametrize("batch", [1, 4])
def test_beam_cached_equals_naive(beam: int, length_penalty: float, batch: int) -> None:
    dec = _decoder(seed=2)
    memory = _memory(batch, 7)
    cached = beam_search(dec, memory, beam, 10, length_penalty)
    if batch > 1:
        assert len({len(s) for s in cached}) > 1, "test needs captions of different lengths"
    assert cached == beam_search(dec, memory, beam, 10, length_penalty, use_cache=False)
    _check_well_formed(cached, 10)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_size_one_is_greedy(seed: int) -> None:
    dec = _decoder(seed=seed)
    memory = _memory(5, seed)
    assert beam_search(dec, memory, 1, 10) == greedy_search(dec, memory, 10)


def _sequence_logprob(dec: TransformerCaptionDecoder, memory: torch.Tensor, seq: list[int]) -> float:
    tokens = torch.tensor([seq])
    logp = dec(memory, tokens[:, :-1], key_padding_mask=tokens[:, :-1] == 0).log_softmax(-1)[0]  # [T-1, V]
    return float(logp.gather(1, tokens[0, 1:, None]).sum().detach())


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_wide_beam_is_exact_search(length_penalty: float) -> None:
    """With a beam wider than every live set, beam search must return the global best sequence."""
    vocab, steps = 6, 3
    dec = _decoder(vocab=vocab, max_length=steps, seed=5, end_bias=0.5)
    with torch.no_grad():
        dec.output_proj.weight.div_(10)  # flatter distributions: many competitive sequences
    memory = _memory(1, 5)
    candidates = []
    for n in range(1, steps + 1):
        for words in itertools.product(range(vocab), repeat=n):
            if END_ID in words[:-1]:
                continue
            if words[-1] != END_ID and n < steps:
                continue  # unfinished hypotheses only count when they ran out of steps
            seq = [START_ID, *words]
            score = _sequence_logprob(dec, memory, seq) / n**length_penalty
            candidates.append((score, seq))
    best_score, best = max(candidates)
    found = beam_search(dec, memory, beam_size=vocab**steps, max_length=steps, length_penalty=length_penalty)[0]
    n = len(found) - 1
    assert math.isclose(_sequence_logprob(dec, memory, found) / n**length_penalty, best_score, rel_tol=1e-5)
    assert found == best


def test_generate_dispatch_and_errors() -> None:
    dec = _decoder()
    memory = _memory(2, 0)
    assert generate(dec, memory, 10) == greedy_search(dec, memory, 10)
    assert generate(dec, memory, 10, beam_size=2) == beam_search(dec, memory, 2, 10)
    assert len(generate(dec, memory, 4, beam_size=3, length_penalty=0.5)) == 2
    with pytest.raises(ModelError, match="exceeds the decoder's 10 positions"):
        greedy_search(dec, memory, 11)
    with pytest.raises(ModelError, match="beam_size"):
        beam_search(dec, memory, 0)
    with pytest.raises(ModelError, match="length_penalty"):
        beam_search(dec, memory, 2, 10, length_penalty=-1.0)


def test_max_length_caps_generation() -> None:
    dec = _decoder(end_bias=-50.0)  # <END> practically never chosen
    for seqs in (greedy_search(dec, _memory(3, 0), 5), beam_search(dec, _memory(3, 0), 2, 5)):
        assert [len(s) for s in seqs] == [6, 6, 6]  # <START> + one prediction per fed position
        assert all(END_ID not in s for s in seqs)


def test_word_attention_gives_a_row_per_word_of_each_caption() -> None:
    dec = _decoder(vocab=14, max_length=10)
    memory = _memory(4, seed=3)
    seqs = [[START_ID, 5, 6, 7, END_ID], [START_ID, 8, NULL_ID, 9], [START_ID, END_ID], [START_ID, 4, 4, 4, 4, 4]]
    maps = word_attention(dec, memory, seqs)
    assert [tuple(m.shape) for m in maps] == [(3, L), (2, L), (0, L), (5, L)]
    full = dec.cross_attention(memory, torch.tensor([s[:5] + [NULL_ID] * (5 - len(s[:5])) for s in seqs]))
    torch.testing.assert_close(maps[0], full[0, 0:3])  # word i was chosen at input position i - 1
    torch.testing.assert_close(maps[1], full[1, [0, 2]])  # the generated <NULL> is no word
    torch.testing.assert_close(maps[3], full[3, 0:5])
    assert all(torch.allclose(m.sum(-1), torch.ones(len(m))) for m in maps)
    assert [m.shape for m in word_attention(dec, memory[:1], [[START_ID]])] == [(0, L)]  # nothing generated


def test_word_attention_follows_beam_search_captions() -> None:
    dec = _decoder(vocab=14, max_length=10)
    memory = _memory(2, seed=4)
    beams = beam_search(dec, memory, 3, 10)
    for seq, m in zip(beams, word_attention(dec, memory, beams), strict=True):
        words = [t for t in seq[1:] if t not in (END_ID, NULL_ID)]
        assert m.shape == (len(words), L)
