"""The fast PNG encoder writes standard PNGs that Pillow decodes to the same pixels."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from changecap.synth.pngio import encode_png, write_png


@pytest.mark.parametrize("shape", [(5, 7), (6, 4, 3), (1, 1, 3)])
def test_round_trip_through_pillow(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=shape, dtype=np.uint8)
    decoded = np.asarray(Image.open(io.BytesIO(encode_png(image))))
    assert decoded.shape == shape
    np.testing.assert_array_equal(decoded, image)


def test_same_input_same_bytes_and_file(tmp_path) -> None:
    image = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    write_png(tmp_path / "x.png", image)
    assert (tmp_path / "x.png").read_bytes() == encode_png(image)
    assert Image.open(tmp_path / "x.png").mode == "RGB"


@pytest.mark.parametrize("bad", [np.zeros((4, 4), np.float32), np.zeros((4, 4, 4), np.uint8), np.zeros(4, np.uint8)])
def test_rejects_unsupported_arrays(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        encode_png(bad)
