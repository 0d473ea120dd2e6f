from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from changecap.data.image_io import (
    MAX_IMAGE_PIXELS,
    MAX_PIXELS_ENV,
    NORMALIZATION,
    as_rgb_array,
    image_header,
    image_size,
    load_image,
    max_image_pixels,
    read_mask,
    read_rgb,
    read_rgb_bytes,
    resize_image,
    resize_mask,
    resize_shorter_then_center_crop,
    save_mask_png,
    to_tensor_normalized,
)
from changecap.errors import ConfigError, DataError
from tests.data.fakes import bomb_png, class_map_png, save_with_orientation

RNG = np.random.default_rng(0)


def _rgb(h: int = 6, w: int = 5) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_read_png_roundtrip(tmp_path: Path) -> None:
    arr = _rgb()
    Image.fromarray(arr).save(tmp_path / "a.png")
    out = read_rgb(tmp_path / "a.png")
    assert out.dtype == np.uint8 and out.shape == (6, 5, 3)
    np.testing.assert_array_equal(out, arr)
    assert image_header(tmp_path / "a.png") == (5, 6, 3)


def test_opaque_rgba_drops_alpha_transparent_is_rejected(tmp_path: Path) -> None:
    arr = _rgb()
    rgba = np.concatenate([arr, np.full((6, 5, 1), 255, np.uint8)], axis=2)
    Image.fromarray(rgba).save(tmp_path / "opaque.png")
    np.testing.assert_array_equal(read_rgb(tmp_path / "opaque.png"), arr)
    rgba[0, 0, 3] = 0
    Image.fromarray(rgba).save(tmp_path / "holes.png")
    with pytest.raises(DataError, match=r"holes\.png.*transparent"):
        read_rgb(tmp_path / "holes.png")


def test_palette_image_is_expanded(tmp_path: Path) -> None:
    arr = np.zeros((4, 4, 3), np.uint8)
    arr[:2] = (200, 10, 30)
    Image.fromarray(arr).convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "p.png")
    out = read_rgb(tmp_path / "p.png")
    assert out.shape == (4, 4, 3) and tuple(out[0, 0]) == (200, 10, 30)


@pytest.mark.parametrize(
    ("mode_arr", "needle"),
    [
        (np.zeros((4, 4), np.uint8), "single-band"),
        (np.zeros((4, 4, 2), np.uint8), "2-band"),
    ],
)
def test_band_count_errors(tmp_path: Path, mode_arr: np.ndarray, needle: str) -> None:
    p = tmp_path / "x.png"
    Image.fromarray(mode_arr).save(p)
    for fn in (read_rgb, image_header):
        with pytest.raises(DataError, match=needle) as info:
            fn(p)
        assert "x.png" in str(info.value) and "\n" not in str(info.value)


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        read_rgb(tmp_path / "missing.png")
    with pytest.raises(DataError, match="directory"):
        read_rgb(tmp_path)
    (tmp_path / "t.png").write_text("hello")
    with pytest.raises(DataError, match="not a readable image"):
        read_rgb(tmp_path / "t.png")
    Image.fromarray(_rgb(32, 32)).save(tmp_path / "c.png")
    data = (tmp_path / "c.png").read_bytes()
    (tmp_path / "c.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="corrupt"):
        read_rgb(tmp_path / "c.png")


def test_tiff_rgb_tile_and_multiband(tmp_path: Path) -> None:
    tifffile = pytest.importorskip("tifffile")
    tile = _rgb(50, 50)
    Image.fromarray(tile).save(tmp_path / "tile.tif")  # Dubai-CC style plain RGB TIFF
    np.testing.assert_array_equal(read_rgb(tmp_path / "tile.tif"), tile)
    five = np.zeros((8, 8, 5), np.uint8)  # [H, W, 5] interleaved multispectral raster
    tifffile.imwrite(tmp_path / "five.tif", five, photometric="minisblack", planarconfig="contig")
    for fn in (read_rgb, image_header):
        with pytest.raises(DataError, match="5 bands"):
            fn(tmp_path / "five.tif")
    planar = np.moveaxis(tile, -1, 0)  # [3, H, W]
    tifffile.imwrite(tmp_path / "planar.tif", planar, photometric="rgb", planarconfig="separate")
    np.testing.assert_array_equal(read_rgb(tmp_path / "planar.tif"), tile)
    tifffile.imwrite(tmp_path / "u16.tif", tile.astype(np.uint16), photometric="rgb")
    np.testing.assert_array_equal(read_rgb(tmp_path / "u16.tif"), tile)  # 0–255 values in 16-bit: exact
    tifffile.imwrite(tmp_path / "u16big.tif", tile.astype(np.uint16) * 200, photometric="rgb")
    with pytest.raises(DataError, match="uint16"):
        read_rgb(tmp_path / "u16big.tif")


def test_read_mask_classes_and_binary(tmp_path: Path) -> None:
    label = np.array([[0, 128], [255, 0]], np.uint8)
    Image.fromarray(np.repeat(label[..., None], 3, axis=2)).save(tmp_path / "m.png")
    m = read_mask(tmp_path / "m.png")
    assert m.dtype == np.uint8 and m.tolist() == [[0, 1], [2, 0]]
    assert read_mask(tmp_path / "m.png", binary=True).tolist() == [[0, 1], [1, 0]]
    Image.fromarray(label).save(tmp_path / "grey.png")  # single-channel labels are fine too
    assert read_mask(tmp_path / "grey.png").tolist() == [[0, 1], [2, 0]]
    Image.fromarray(np.array([[0, 64]], np.uint8)).save(tmp_path / "bad.png")
    with pytest.raises(DataError, match=r"bad\.png.*value\(s\) 64"):
        read_mask(tmp_path / "bad.png")


def test_resize_functions() -> None:
    img = _rgb(20, 10)
    assert resize_image(img, 8).shape == (8, 8, 3)
    assert resize_image(img, (4, 6), resample="bilinear").shape == (4, 6, 3)
    assert resize_image(img, (20, 10)) is img  # no-op keeps the pixels exactly
    mask = np.zeros((20, 10), np.uint8)
    mask[:10] = 2
    small = resize_mask(mask, 5)
    assert small.shape == (5, 5) and set(np.unique(small)) <= {0, 2}
    clip = resize_shorter_then_center_crop(img, 8)
    assert clip.shape == (8, 8, 3)
    # shorter side (width 10) → 8, height → int(8 * 20 / 10) = 16, crop rows round((16 - 8) / 2) = 4 .. 12
    full = resize_image(img, (16, 8), resample="bicubic")
    np.testing.assert_array_equal(clip, full[4:12])
    assert resize_shorter_then_center_crop(mask, 4, resample="nearest").shape == (4, 4)


def test_normalisation_constants_and_tensor() -> None:
    assert set(NORMALIZATION) >= {"levir-cc", "dubai-cc", "whu-cdc", "clip", "imagenet"}
    mean, std = NORMALIZATION["clip"]
    assert mean == (0.48145466, 0.4578275, 0.40821073) and std[0] == 0.26862954
    assert NORMALIZATION["imagenet"][0][0] == pytest.approx(0.485, abs=1e-4)
    assert NORMALIZATION["dubai-cc"][0][0] == pytest.approx(156.0681 / 255)
    img = np.zeros((2, 3, 3), np.uint8)
    img[..., 1] = 255
    t = to_tensor_normalized(img, (0.5, 0.5, 0.5), (0.5, 0.25, 1.0))
    assert t.shape == (3, 2, 3) and t.dtype == torch.float32
    assert torch.allclose(t[0], torch.full((2, 3), -1.0)) and torch.allclose(t[1], torch.full((2, 3), 2.0))


def test_as_rgb_array_accepts_pil_and_arrays(tmp_path: Path) -> None:
    arr = _rgb()
    np.testing.assert_array_equal(as_rgb_array(Image.fromarray(arr)), arr)
    np.testing.assert_array_equal(as_rgb_array(arr.astype(np.float32) / 255.0), arr)
    with pytest.raises(DataError, match="single-band"):
        as_rgb_array(arr[..., 0])
    with pytest.raises(DataError, match="0–1"):
        as_rgb_array(arr.astype(np.float32))


# ---------------------------------------------------------------------------------------------------------- bombs
@pytest.mark.parametrize("reader", [read_rgb, image_header, image_size, read_mask, load_image])
def test_a_decompression_bomb_is_a_one_line_data_error_without_pillow_warnings(tmp_path: Path, reader: Any) -> None:
    bomb = bomb_png(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 1000
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's DecompressionBombWarning would be a second, multi-line message
        with pytest.raises(DataError, match=r"bomb.png: image is 30000×30000 pixels .*above the limit") as e:
            reader(bomb)
    assert "\n" not in str(e.value)
    assert Image.MAX_IMAGE_PIXELS is not None  # Pillow's own bound is back for everyone else


def test_the_bound_is_settable_per_call_and_by_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Image.fromarray(_rgb(10, 10)).save(tmp_path / "a.png")
    assert max_image_pixels() == MAX_IMAGE_PIXELS
    with pytest.raises(DataError, match="above the limit of 99 pixels"):
        read_rgb(tmp_path / "a.png", max_pixels=99)
    assert read_rgb(tmp_path / "a.png", max_pixels=100).shape == (10, 10, 3)
    monkeypatch.setenv(MAX_PIXELS_ENV, "50")
    with pytest.raises(DataError, match="above the limit of 50 pixels"):
        image_header(tmp_path / "a.png")
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(ConfigError, match=MAX_PIXELS_ENV):
        read_rgb(tmp_path / "a.png")


def test_a_bound_above_pillows_own_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Image.fromarray(_rgb(10, 10)).save(tmp_path / "a.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20)  # Pillow would warn above 20 and refuse above 40
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_rgb(tmp_path / "a.png").shape == (10, 10, 3)
    assert Image.MAX_IMAGE_PIXELS == 20


def test_tiff_bound_is_checked_on_the_tags(tmp_path: Path) -> None:
    tifffile = pytest.importorskip("tifffile")
    tifffile.imwrite(tmp_path / "t.tif", _rgb(20, 20), photometric="rgb")
    for reader in (read_rgb, image_header):
        with pytest.raises(DataError, match="t.tif: image is 20×20 pixels"):
            reader(tmp_path / "t.tif", max_pixels=399)


def test_bytes_are_read_with_their_display_name(tmp_path: Path) -> None:
    arr = _rgb()
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    np.testing.assert_array_equal(read_rgb_bytes(buf.getvalue(), "upload.png"), arr)
    with pytest.raises(DataError, match=r"^holiday.jpg: not a readable image file$"):
        read_rgb_bytes(b"not an image", "holiday.jpg")
    with pytest.raises(DataError, match=r"^big.png: image is 30000×30000"):
        read_rgb_bytes(bomb_png(tmp_path / "b.png").read_bytes(), "big.png")


# ---------------------------------------------------------------------------------------------------------- EXIF
def _quadrants(h: int, w: int) -> np.ndarray:
    """Four flat colour blocks (survive JPEG): red top-left, green top-right, blue bottom-left, white bottom-right."""
    arr = np.zeros((h, w, 3), np.uint8)
    arr[: h // 2, : w // 2] = (255, 0, 0)
    arr[: h // 2, w // 2 :] = (0, 255, 0)
    arr[h // 2 :, : w // 2] = (0, 0, 255)
    arr[h // 2 :, w // 2 :] = 255
    return arr


def test_jpeg_with_exif_orientation_is_read_upright(tmp_path: Path) -> None:
    stored = _quadrants(32, 48)
    path = save_with_orientation(stored, tmp_path / "turned.jpg", 6, quality=95)  # viewers turn it 90° clockwise
    out = read_rgb(path)
    assert out.shape == (48, 32, 3)
    corners = {(6, 6): (0, 0, 255), (6, 26): (255, 0, 0), (42, 6): (255, 255, 255), (42, 26): (0, 255, 0)}
    for (y, x), colour in corners.items():  # turned clockwise: the stored bottom-left (blue) is now top-left
        assert np.abs(out[y, x].astype(int) - colour).max() < 30  # JPEG: close, not exact
    assert image_header(path) == (32, 48, 3) and image_size(path) == (32, 48)
    with Image.open(path) as img:  # a PIL image handed over by a caller is turned the same way
        np.testing.assert_array_equal(as_rgb_array(img), out)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_matches_pillow_for_png_masks_and_tiff(tmp_path: Path, orientation: int) -> None:
    stored = _rgb(4, 6)
    with Image.open(save_with_orientation(stored, tmp_path / "a.png", orientation)) as img:
        expected = np.asarray(ImageOps.exif_transpose(img))
    np.testing.assert_array_equal(read_rgb(tmp_path / "a.png"), expected)
    label = np.where(stored[..., :1] > 128, 255, 0).astype(np.uint8).repeat(3, axis=2)  # [4, 6, 3] of 0 / 255
    save_with_orientation(label, tmp_path / "m.png", orientation)
    assert read_mask(tmp_path / "m.png").shape == expected.shape[:2]  # masks turn with their images
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), read_rgb(tmp_path / "m.png")[..., 0] // 255 * 2)
    tifffile = pytest.importorskip("tifffile")
    tifffile.imwrite(tmp_path / "a.tif", stored, photometric="rgb", extratags=[(0x0112, "H", 1, orientation, True)])
    np.testing.assert_array_equal(read_rgb(tmp_path / "a.tif"), expected)
    assert image_header(tmp_path / "a.tif") == (expected.shape[1], expected.shape[0], 3)


@pytest.mark.parametrize("palette", [False, True])
def test_class_maps_are_only_turned_never_resampled_or_recoloured(tmp_path: Path, palette: bool) -> None:
    ids = (np.arange(24, dtype=np.uint8).reshape(4, 6) * 11) % 251  # [4, 6], every value distinct
    path = class_map_png(tmp_path / "m.png", ids, orientation=6, palette=palette)
    with load_image(path) as img:
        assert img.mode == ("P" if palette else "L")  # no conversion: a P map keeps its indices
        got = np.asarray(img)
    np.testing.assert_array_equal(got, np.rot90(ids, -1))  # the exact ids, turned as the images are
    assert image_size(path) == (4, 6)
    with load_image(class_map_png(tmp_path / "u.png", ids, palette=palette)) as img:
        np.testing.assert_array_equal(np.asarray(img), ids)


def test_unparsable_exif_reads_as_stored(tmp_path: Path) -> None:
    arr = _rgb()
    Image.fromarray(arr).save(tmp_path / "a.png", exif=b"Exif\x00\x00garbage")
    np.testing.assert_array_equal(read_rgb(tmp_path / "a.png"), arr)


def test_a_predicted_mask_is_saved_as_a_black_and_white_png(tmp_path: Path) -> None:
    mask = np.array([[0, 1, 2], [1, 0, 0]], np.uint8)  # any class > 0 is a change
    path = save_mask_png(mask, tmp_path / "sub" / "m.png")
    with Image.open(path) as img:
        assert img.mode == "L" and np.asarray(img).tolist() == [[0, 255, 255], [255, 0, 0]]
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.png"]  # written atomically: no temporary left
