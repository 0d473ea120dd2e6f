"""Deterministic distributed batch sampler: the order is a pure function of ``(seed, epoch)``.

Each epoch the dataset indices are permuted with a generator seeded by ``(seed, epoch)`` and cut into global
batches of ``batch_size``. A global batch is split into ``world_size × grad_accum`` contiguous micro-batches; process
``r`` takes micro-batches ``r·k … r·k + k − 1`` (rank-major). So 1 process × k micro-batches and k processes × 1
micro-batch see exactly the same micro-batches, which makes the two set-ups give the same gradient.

``start_step`` skips the first updates of an epoch without touching any random state, which is how a run
interrupted mid-epoch resumes at the batch it stopped at.

The last, smaller global batch is kept (split as evenly as possible, like ``numpy.array_split``) unless
``drop_last``, or unless it is too small to give every process and micro-batch one sample: DDP needs every process
to run the same number of forward/backward passes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

# Salt of the permutation's seed sequence, so it never coincides with a dataset item's generator, which the dataset
# seeds with (seed, epoch, index) (a SeedSequence pads short entropy with zeros: (s, e) ≡ (s, e, 0)).
_SAMPLER_SPAWN_KEY = (0x5EED5A,)


class DeterministicBatchSampler(Sampler[list[int]]):
    """Yields this process's micro-batches (lists of dataset indices) for one epoch.

    Args:
        num_items: dataset length.
        batch_size: GLOBAL batch size (all processes and micro-batches of one optimiser update).
        world_size: number of processes.
        rank: this process.
        grad_accum: micro-batches per process per update.
        seed: base seed; the permutation of epoch ``e`` depends on ``(seed, e)`` only.
        shuffle: permute (training) or keep dataset order.
        drop_last: drop the last, smaller global batch.
        indices: the dataset items to draw from (a phase's filtered subset); ``None`` is ``range(num_items)``. The
            order is a permutation of positions in this list, so a subset is shuffled like a dataset of its size.
    """

    def __init__(
        self,
        num_items: int,
        batch_size: int,
        world_size: int = 1,
        rank: int = 0,
        grad_accum: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = False,
        indices: Sequence[int] | None = None,
    ) -> None:
        if indices is not None and len(indices) != num_items:
            raise ValueError(f"{len(indices)} indices given for num_items={num_items}")
        if batch_size % (world_size * grad_accum):
            raise ValueError(f"batch_size {batch_size} is not divisible by world_size × grad_accum")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} out of range for world_size {world_size}")
        self.num_items = num_items
        self.batch_size = batch_size
        self.world_size = world_size
        self.rank = rank
        self.grad_accum = grad_accum
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.indices = None if indices is None else list(indices)
        self.epoch = 0
        self.start_step = 0

    # ------------------------------------------------------------------ position
    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Select the epoch and the first update to yield (``start_step`` > 0 when resuming mid-epoch)."""
        if not 0 <= start_step <= self.steps_per_epoch:
            raise ValueError(f"start_step {start_step} out of range for {self.steps_per_epoch} steps per epoch")
        self.epoch = epoch
        self.start_step = start_step

    @property
    def steps_per_epoch(self) -> int:
        """Optimiser updates per epoch."""
        full, rest = divmod(self.num_items, self.batch_size)
        keep_rest = rest >= self.world_size * self.grad_accum and not self.drop_last
        return full + int(keep_rest)

    def __len__(self) -> int:
        """Micro-batches this process yields from ``start_step`` to the end of the epoch."""
        return (self.steps_per_epoch - self.start_step) * self.grad_accum

    # ------------------------------------------------------------------ order
    def permutation(self, epoch: int) -> list[int]:
        """The epoch's index order: a pure function of ``(seed, epoch)``."""
        if not self.shuffle:
            return list(range(self.num_items))
        ss = np.random.SeedSequence((self.seed, epoch), spawn_key=_SAMPLER_SPAWN_KEY)
        return np.random.default_rng(ss).permutation(self.num_items).tolist()

    def micro_batches(self, step: int, order: list[int]) -> list[list[int]]:
        """This process's ``grad_accum`` micro-batches of update ``step`` (``order`` from :meth:`permutation`)."""
        batch = order[step * self.batch_size : (step + 1) * self.batch_size]
        parts = self.world_size * self.grad_accum
        base, extra = divmod(len(batch), parts)
        # array_split: the first `extra` chunks get one more sample.
        bounds = [0]
        for c in range(parts):
            bounds.append(bounds[-1] + base + (1 if c < extra else 0))
        first = self.rank * self.grad_accum
        return [batch[bounds[c] : bounds[c + 1]] for c in range(first, first + self.grad_accum)]

    def __iter__(self) -> Iterator[list[int]]:
        order = self.permutation(self.epoch)
        for step in range(self.start_step, self.steps_per_epoch):
            for micro in self.micro_batches(step, order):
                yield micro if self.indices is None else [self.indices[i] for i in micro]


class ShardSampler(Sampler[list[int]]):
    """Evaluation batches of this process: items ``rank, rank + W, …`` in order (every item exactly once overall)."""

    def __init__(self, num_items: int, batch_size: int, world_size: int = 1, rank: int = 0) -> None:
        self.indices = list(range(rank, num_items, world_size))
        self.batch_size = batch_size

    def __len__(self) -> int:
        return -(-len(self.indices) // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        for i in range(0, len(self.indices), self.batch_size):
            yield self.indices[i : i + self.batch_size]
