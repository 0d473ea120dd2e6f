"""Deterministic distributed batch sampler: pure function of (seed, epoch), resumable, rank-consistent."""

from __future__ import annotations

import pytest

from changecap.engine.sampler import DeterministicBatchSampler, ShardSampler


def epoch_batches(n: int, batch: int, world: int, accum: int, epoch: int, seed: int = 0, start: int = 0, **kw):
    """Micro-batches of every rank: ranks[r] = list of micro-batches."""
    out = []
    for r in range(world):
        s = DeterministicBatchSampler(n, batch, world, r, accum, seed=seed, **kw)
        s.set_epoch(epoch, start_step=start)
        out.append(list(s))
    return out


def test_order_is_a_pure_function_of_seed_and_epoch() -> None:
    a = epoch_batches(37, 8, 1, 1, epoch=3, seed=5)
    assert a == epoch_batches(37, 8, 1, 1, epoch=3, seed=5)
    assert a != epoch_batches(37, 8, 1, 1, epoch=4, seed=5)
    assert a != epoch_batches(37, 8, 1, 1, epoch=3, seed=6)
    flat = [i for mb in a[0] for i in mb]
    assert sorted(flat) == list(range(37))  # every item once (last batch of 5 kept)


def test_start_step_resumes_mid_epoch() -> None:
    full = epoch_batches(40, 8, 1, 2, epoch=1)[0]
    tail = epoch_batches(40, 8, 1, 2, epoch=1, start=3)[0]
    assert tail == full[3 * 2 :]
    s = DeterministicBatchSampler(40, 8, 1, 0, 2)
    s.set_epoch(1, start_step=3)
    assert len(s) == 4 and s.steps_per_epoch == 5


def test_one_process_k_micro_batches_equals_k_processes() -> None:
    single = epoch_batches(30, 8, 1, 4, epoch=2)[0]  # 1 x 4
    ddp = epoch_batches(30, 8, 2, 2, epoch=2)  # 2 x 2
    steps = len(single) // 4
    for step in range(steps):
        assert single[4 * step : 4 * step + 4] == ddp[0][2 * step : 2 * step + 2] + ddp[1][2 * step : 2 * step + 2]
    # the last global batch (30 = 3 x 8 + 6) is split 2/2/1/1
    assert [len(b) for b in single[-4:]] == [2, 2, 1, 1]


def test_last_batch_dropped_when_too_small_or_asked() -> None:
    assert DeterministicBatchSampler(17, 8, 2, 0, 2).steps_per_epoch == 2  # 1 leftover < 4 parts
    assert DeterministicBatchSampler(20, 8, 2, 0, 2).steps_per_epoch == 3
    assert DeterministicBatchSampler(20, 8, 1, 0, 1, drop_last=True).steps_per_epoch == 2
    with pytest.raises(ValueError):
        DeterministicBatchSampler(20, 6, 4, 0, 1)


def test_shard_sampler_covers_each_item_once() -> None:
    shards = [list(ShardSampler(11, 3, 3, r)) for r in range(3)]
    flat = sorted(i for shard in shards for b in shard for i in b)
    assert flat == list(range(11))
    assert len(ShardSampler(11, 3, 3, 0)) == 2
