"""Item filters for phases (``Phase.filter``): which training items a phase reads, decided without loading images.

They read ``dataset.record(index)`` (a :class:`~changecap.data.annotations.PairRecord`: flags, paths, captions),
which ``ChangeCaptionDataset`` provides; a custom dataset used with them must provide it too. Module-level
functions, so the trainer selects each phase's items once per run (filters are compared by identity).
"""

from __future__ import annotations

from typing import Any


def _record(dataset: Any, index: int) -> Any:
    record = getattr(dataset, "record", None)  # the dataset's, not a model's
    if record is None:
        raise TypeError(f"{type(dataset).__name__} has no record(index); these phase filters need one")
    return record(index)


def changed_pairs(dataset: Any, index: int) -> bool:
    """Pairs whose change flag is set."""
    return bool(_record(dataset, index).changed)


def unchanged_pairs(dataset: Any, index: int) -> bool:
    """Pairs whose change flag is not set."""
    return not _record(dataset, index).changed


def pairs_with_mask(dataset: Any, index: int) -> bool:
    """Pairs with a change mask (change-detection supervision): a mask file, or semantic maps to derive it from."""
    record = _record(dataset, index)
    # a record type without semantic maps (not every dataset's) has no such field
    return record.mask_path is not None or getattr(record, "semantic_paths", None) is not None


def pairs_with_captions(dataset: Any, index: int) -> bool:
    """Pairs with at least one reference caption (captioning supervision)."""
    return bool(_record(dataset, index).captions)


def pairs_with_mask_and_captions(dataset: Any, index: int) -> bool:
    """Pairs with both (the joint phase of a multi-task schedule)."""
    return pairs_with_mask(dataset, index) and pairs_with_captions(dataset, index)
