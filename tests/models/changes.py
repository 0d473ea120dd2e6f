"""``with_changes``: a deep copy of a nested config dict with dotted-key changes (shared by the tiny-config helpers)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any


def with_changes(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """``with_changes(TINY, {"encoder.bcsf_placement": "windowed"})``: missing parents are created."""
    d = copy.deepcopy(dict(base))
    for key, value in changes.items():
        *parents, last = key.split(".")
        node = d
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return d
