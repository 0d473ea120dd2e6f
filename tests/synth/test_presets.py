"""Preset resolution, argument validation and LEVIR-CC split proportions."""

from __future__ import annotations

import pytest

from changecap.errors import ConfigError
from changecap.synth.presets import LEVIR_SPLIT_PAIRS, PRESETS, resolve_settings, split_sizes


def test_full_preset_has_levir_cc_splits() -> None:
    full = resolve_settings(preset="full")
    assert (full.pairs, full.size) == (10077, 256)
    assert split_sizes(full.pairs) == LEVIR_SPLIT_PAIRS


@pytest.mark.parametrize("n", [1, 2, 3, 7, 60, 2400, 12345])
def test_split_sizes_cover_every_pair_in_levir_proportions(n: int) -> None:
    sizes = split_sizes(n)
    assert sum(sizes.values()) == n
    if n >= 3:
        assert min(sizes.values()) >= 1
    if n >= 1000:
        assert abs(sizes["train"] / n - 6815 / 10077) < 0.002
        assert abs(sizes["test"] / n - 1929 / 10077) < 0.002


def test_explicit_values_override_the_preset() -> None:
    s = resolve_settings(preset="tiny", pairs=7, size=48, seed=3, workers=2)
    assert (s.preset, s.pairs, s.size, s.seed, s.workers) == ("tiny", 7, 48, 3, 2)
    assert resolve_settings(preset="small").size == PRESETS["small"].size


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"pairs": 0}, "pairs"),
        ({"pairs": -5}, "pairs"),
        ({"size": 16}, "size"),
        ({"size": 4096}, "size"),
        ({"seed": -1}, "seed"),
        ({"workers": 0}, "workers"),
        ({"preset": "huge"}, "preset"),
        ({"pairs": 2.5}, "pairs"),
    ],
)
def test_bad_values_raise_one_line_config_errors(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        resolve_settings(**kwargs)
    assert err.value.field == field
    assert "\n" not in str(err.value) and f"'{field}'" in str(err.value)
