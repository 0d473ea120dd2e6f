"""Photometric nuisance: the integer blur matches the [1, 2, 1] kernel and the finish keeps the image in range."""

from __future__ import annotations

import numpy as np

from changecap.synth.nuisance import apply_photometric, blur_121, draw_nuisance


def test_blur_matches_a_direct_convolution_with_replicated_edges() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(9, 7, 3), dtype=np.uint8)
    padded = np.pad(image.astype(float), ((1, 1), (1, 1), (0, 0)), mode="edge")  # [11, 9, 3]
    k = np.array([1.0, 2.0, 1.0])
    ref = np.zeros(image.shape)
    for dy in range(3):
        for dx in range(3):
            ref += k[dy] * k[dx] * padded[dy : dy + 9, dx : dx + 7]
    ref = np.floor(ref / 16 + 0.5)
    np.testing.assert_array_equal(blur_121(image), ref)
    flat = np.full((4, 4, 3), 77, np.uint8)
    assert (blur_121(flat) == 77).all()


def test_after_images_are_shifted_and_finish_is_uint8() -> None:
    rng = np.random.default_rng(1)
    for size in (32, 256):
        nz = draw_nuisance(rng, size, after=True)
        assert nz.shift != (0, 0) and max(map(abs, nz.shift)) <= max(1, round(3 * size / 256))
        assert draw_nuisance(rng, size, after=False).shift == (0, 0)
    nz = draw_nuisance(rng, 16, after=False)
    rgb = np.full((16, 16, 3), 120.0, np.float32) * nz.scale()
    out = apply_photometric(rgb, np.zeros((16, 16), np.float32), nz, rng)
    assert out.dtype == np.uint8 and out.shape == (16, 16, 3)
    assert 0 < out.std() < 8  # sensor noise on a flat field, a few grey levels
