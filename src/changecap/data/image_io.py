"""Reading, resizing and normalising satellite images without torchvision.

Every reader returns plain numpy arrays (``uint8 [H, W, 3]`` images, ``uint8 [H, W]`` masks) so the same functions
serve the dataset readers, the baselines and the predictor for user images. Failures caused by the input (missing
file, not an image, wrong band count, unexpected mask value) raise :class:`~changecap.errors.DataError` with a
one-line message naming the file.

Decisions (documented here because the benchmarks do not fix them):

* **RGBA** is accepted only when the alpha channel is fully opaque (all 255): the alpha is then dropped. A PNG saved
  with an alpha channel by an image editor is still an RGB photograph; a partly transparent one is not a valid
  satellite tile, so it is rejected rather than composited onto an arbitrary background.
* **Palette** (mode ``P``) images are expanded to RGB — the palette is just a storage trick.
* **1-band / 2-band / 4+-band** images are rejected with the band count in the message (no silent grey→RGB
  replication: a grey image in an RGB benchmark almost always means a wrong file, e.g. a label in an image folder).
* **TIFF**: read with ``tifffile`` when it is installed (exact band count and bit depth; multi-band GeoTIFFs), else
  with Pillow (plain 8-bit RGB TIFFs such as the Dubai-CC tiles). Non-8-bit data is accepted only when the values
  already lie in 0–255 (integers) or 0–1 (floats); anything else needs a user-chosen stretch and is rejected.
* **Size bound**: an image whose header declares more than :data:`MAX_IMAGE_PIXELS` pixels (8192 × 8192 by
  default; ``max_pixels=`` per call, ``$CHANGECAP_MAX_IMAGE_PIXELS`` for the process) is refused from its header,
  before anything is decoded: a PNG can declare 30000 × 30000 pixels in a few hundred bytes.
* **EXIF orientation** (also the TIFF Orientation tag) is applied to images and masks alike, so pixels are read the
  way image viewers show them; unparsable EXIF counts as "stored upright".
"""

from __future__ import annotations

import io
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from changecap.data.files import atomic_write
from changecap.errors import ConfigError, DataError

ImageSource = str | os.PathLike[str] | Image.Image | np.ndarray
Resample = Literal["bicubic", "bilinear", "nearest"]
Size = int | tuple[int, int]

TIFF_SUFFIXES = frozenset({".tif", ".tiff"})

# Mean / std per RGB channel on the 0–1 scale, as the peers publish them (those on the 0–255 scale divided by
# 255 here), so every setting composes with ``to_tensor_normalized`` the same way.
NORMALIZATION: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    # LEVIR-CC README "ALL" statistics (RSCaMa / HiSem / Change-Agent); labelled "var" there but used as std.
    "levir-cc": ((0.39073, 0.38623, 0.32989), (0.15329, 0.14628, 0.13648)),
    # Chg2Cap's own LEVIR-CC statistics (0–255 in the source).
    "levir-cc-chg2cap": (
        (100.6790 / 255, 99.5023 / 255, 84.9932 / 255),
        (50.9820 / 255, 48.4838 / 255, 44.7057 / 255),
    ),
    "dubai-cc": (
        (156.0681 / 255, 115.0891 / 255, 92.0745 / 255),
        (76.5139 / 255, 52.0616 / 255, 44.4209 / 255),
    ),
    "whu-cdc": (
        (123.8806 / 255, 118.6361 / 255, 108.5552 / 255),
        (49.5580 / 255, 47.7908 / 255, 50.2587 / 255),
    ),
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    "imagenet": ((123.675 / 255, 116.28 / 255, 103.53 / 255), (58.395 / 255, 57.12 / 255, 57.375 / 255)),
}
# LEVIR-MCI shares LEVIR-CC's imagery.
NORMALIZATION["levir-mci"] = NORMALIZATION["levir-cc"]

# LEVIR-MCI label values → class ids (0 no change, 1 road change, 2 building change), as LEVIR-MCI stores them.
MASK_VALUE_TO_CLASS: dict[int, int] = {0: 0, 128: 1, 255: 2}

_PIL_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}


# ---------------------------------------------------------------------------------------------------------- reading
# The largest image (width × height, after nothing is decoded) any reader accepts: 8192 × 8192, about 200 MB as RGB.
# A PNG or JPEG header can declare 30000 × 30000 pixels in a few hundred bytes (a decompression bomb); such a file is
# refused from its header, before anything is decoded. Larger scenes go through `changecap scene` (tiled reading).
# Change the bound per call (``max_pixels=``), for the process (this constant) or for the CLI (the environment
# variable below, a positive integer).
MAX_IMAGE_PIXELS = 8192 * 8192
MAX_PIXELS_ENV = "CHANGECAP_MAX_IMAGE_PIXELS"

ORIENTATION_TAG = 0x0112  # EXIF / TIFF Orientation

# Pillow's own bound is a process-wide setting that warns (a second, multi-line message) before it errors; it is
# switched off only while a header is parsed under this lock, and the bound above is checked on that header at once.
_PIL_OPEN_LOCK = threading.Lock()

ReadSource = str | os.PathLike[str] | bytes | BinaryIO


def max_image_pixels(max_pixels: int | None = None) -> int:
    """The pixel bound in force: ``max_pixels`` when given, else ``$CHANGECAP_MAX_IMAGE_PIXELS``, else
    :data:`MAX_IMAGE_PIXELS`."""
    if max_pixels is not None:
        return int(max_pixels)
    env = os.environ.get(MAX_PIXELS_ENV)
    if env is None or not env.strip():
        return MAX_IMAGE_PIXELS
    try:
        value = int(env)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(MAX_PIXELS_ENV, f"must be a positive integer (pixels), got {env!r}")
    return value


def _check_file(path: Path) -> None:
    if not path.exists():
        raise DataError(path, "image file not found")
    if not path.is_file():
        raise DataError(path, "expected an image file, found a directory")


class ImageTooLarge(DataError):
    """An image whose header declares more pixels than the bound in force (``width``, ``height``, ``bound``)."""

    def __init__(self, path: str | Path | None, width: int, height: int, bound: int) -> None:
        self.width, self.height, self.bound = width, height, bound
        super().__init__(
            path,
            f"image is {width}×{height} pixels ({width * height:,}), above the limit of {bound:,} pixels "
            f"(a decompression bomb, or an image too large to caption whole; the limit is ${MAX_PIXELS_ENV})",
        )


def _check_pixels(label: str | Path | None, width: int, height: int, max_pixels: int | None) -> None:
    bound = max_image_pixels(max_pixels)
    if width * height > bound:
        raise ImageTooLarge(label, width, height, bound)


def _bands_error(path: str | Path | None, bands: int, detail: str) -> DataError:
    what = "single-band (grayscale)" if bands == 1 else f"{bands}-band"
    return DataError(path, f"{what} image ({detail}); an RGB (3-band) image is required")


def _source(source: ReadSource, name: str | None) -> tuple[Path | BinaryIO, str | Path | None, str]:
    """(what Pillow / tifffile open, the label errors name, the lower-case suffix that picks the TIFF reader)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(source)), name, Path(name or "").suffix.lower()
    if isinstance(source, (str, os.PathLike)):
        p = Path(source)
        _check_file(p)
        return p, name or p, p.suffix.lower()
    return source, name, Path(name or "").suffix.lower()


def _rewind(fp: Path | BinaryIO) -> None:
    if not isinstance(fp, Path):
        fp.seek(0)


@contextmanager
def open_image(
    source: ReadSource, name: str | None = None, *, max_pixels: int | None = None
) -> Iterator[Image.Image]:
    """Open an image with Pillow (header parsed, nothing decoded yet) after checking its declared size against the
    pixel bound; every failure inside the ``with`` block that comes from the file is a one-line :class:`DataError`
    naming ``name`` (default: the path; for bytes or a file object, name the upload).

    Every reader of user images opens them here (the web server's uploads go through :func:`read_rgb_bytes`). The
    image is as stored: use :func:`load_image` for decoded, upright pixels (EXIF orientation applied).
    """
    fp, label, _ = _source(source, name)
    try:
        with _PIL_OPEN_LOCK:
            saved = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
            try:
                img = Image.open(fp)
            finally:
                Image.MAX_IMAGE_PIXELS = saved
    except UnidentifiedImageError:
        raise DataError(label, "not a readable image file") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise DataError(label, f"corrupt image ({_one_line(e)})") from None
    with img:
        _check_pixels(label, *img.size, max_pixels)
        try:
            yield img
        except DataError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise DataError(label, f"image too large ({_one_line(e)})") from None
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            raise DataError(label, f"corrupt image ({_one_line(e)})") from None


def _orientation(img: Image.Image, decoded: bool) -> int:
    """The EXIF orientation (1–8; 1 = stored upright). Unparsable EXIF counts as 1, as image viewers show it."""
    if not decoded and img.format == "PNG" and "exif" not in img.info:
        return 1  # Pillow would decode the whole PNG to look for a late eXIf chunk; PNG writers put it first
    try:
        value = int(img.getexif().get(ORIENTATION_TAG, 1))
    except Exception:  # noqa: BLE001 - malformed EXIF: the pixels are still fine, shown as stored
        return 1
    return value if 1 <= value <= 8 else 1


def upright(img: Image.Image) -> Image.Image:
    """An image with its EXIF orientation applied (a camera stores a rotated photo unrotated plus a tag), so the
    pixels are the way every image viewer shows them: a new, decoded image when the tag asks for a turn or a flip,
    else ``img`` itself (never changed in place)."""
    if _orientation(img, decoded=True) == 1:
        return img
    return ImageOps.exif_transpose(img)


def load_image(source: ReadSource, name: str | None = None, *, max_pixels: int | None = None) -> Image.Image:
    """Decode an image fully and upright (see :func:`open_image` for the checks and :func:`upright`)."""
    with open_image(source, name, max_pixels=max_pixels) as img:
        w, h = img.size
        if Image.MAX_IMAGE_PIXELS is not None and w * h > Image.MAX_IMAGE_PIXELS:
            # only when the bound was raised past Pillow's: its checks inside the decoders would warn or refuse
            with _PIL_OPEN_LOCK:
                saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
                try:
                    img.load()
                finally:
                    Image.MAX_IMAGE_PIXELS = saved
        else:
            img.load()
        turned = upright(img)
    return turned


def _to_uint8(arr: np.ndarray, path: str | Path | None) -> np.ndarray:
    """Bring non-8-bit pixel data to uint8 without guessing a stretch (see module docstring)."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.integer):
        lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
        if lo < 0 or hi > 255:
            raise DataError(path, f"{arr.dtype} pixel values span [{lo}, {hi}]; 8-bit RGB (0–255) is required")
        return arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        lo_f, hi_f = (float(np.nanmin(arr)), float(np.nanmax(arr))) if arr.size else (0.0, 0.0)
        if not np.isfinite(arr).all() or lo_f < 0.0 or hi_f > 1.0:
            raise DataError(path, f"float pixel values span [{lo_f:.3g}, {hi_f:.3g}]; floats must lie in 0–1")
        return np.round(arr * 255.0).astype(np.uint8)
    raise DataError(path, f"unsupported pixel type {arr.dtype}")


def _drop_opaque_alpha(arr: np.ndarray, path: str | Path | None) -> np.ndarray:
    """``[H, W, 4]`` → ``[H, W, 3]`` when the 4th band is a fully opaque alpha, else a DataError."""
    alpha = arr[..., 3]
    opaque = 255 if arr.dtype == np.uint8 else alpha.max(initial=0)
    if not (alpha == opaque).all():
        raise DataError(path, "RGBA image with a transparent alpha channel; an opaque RGB image is required")
    return arr[..., :3]


def pil_to_rgb(img: Image.Image, path: str | Path | None = None) -> np.ndarray:
    """Convert a decoded PIL image to ``uint8 [H, W, 3]`` following the module's band rules (EXIF orientation is the
    caller's: :func:`load_image` applies it)."""
    mode = img.mode
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode == "RGB":
        return np.array(img, dtype=np.uint8)  # a writable copy (np.asarray of a PIL image is read-only)
    if mode in ("RGBA", "RGBa"):
        return np.ascontiguousarray(_drop_opaque_alpha(np.asarray(img.convert("RGBA"), dtype=np.uint8), path))
    if mode == "RGBX":
        return np.asarray(img.convert("RGB"), dtype=np.uint8)
    bands = len(img.getbands())
    if bands == 3:  # e.g. YCbCr, LAB, HSV: still colour, Pillow knows the conversion
        return np.asarray(img.convert("RGB"), dtype=np.uint8)
    raise _bands_error(path, bands, f"mode {mode}")


def _orient_array(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply a TIFF / EXIF orientation to ``[H, W(, C)]`` pixels (the same transposes as Pillow's exif_transpose)."""
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),  # [W, H(, C)]
        6: lambda a: np.rot90(a, -1),  # clockwise
        7: lambda a: a[::-1, ::-1].swapaxes(0, 1),  # [W, H(, C)]
        8: lambda a: np.rot90(a, 1),  # counter-clockwise
    }
    op = ops.get(orientation)
    return arr if op is None else np.ascontiguousarray(op(arr))


def _tiff_orientation(tif: Any) -> int:
    tag = tif.pages[0].tags.get(ORIENTATION_TAG)
    try:
        value = int(tag.value) if tag is not None else 1
    except (TypeError, ValueError):
        return 1
    return value if 1 <= value <= 8 else 1


def _tifffile_array(
    fp: Path | BinaryIO, label: str | Path | None, max_pixels: int | None
) -> tuple[np.ndarray, bool] | None:
    """Read a TIFF with tifffile as upright ``[H, W, C]`` plus whether its 4th band is flagged as alpha; None if
    unusable. The pixel bound is checked on the tags, before the pixels are read."""
    try:
        import tifffile
    except ImportError:
        return None
    try:
        with tifffile.TiffFile(fp) as tif:
            series = tif.series[0]
            axes = str(series.axes)
            if "Y" in axes and "X" in axes:
                _check_pixels(label, int(series.shape[axes.index("X")]), int(series.shape[axes.index("Y")]), max_pixels)
            arr = series.asarray()
            extras = tuple(getattr(tif.pages[0], "extrasamples", ()) or ())
            orientation = _tiff_orientation(tif)
    except DataError:
        raise
    except Exception:  # noqa: BLE001 - any decode problem: let Pillow have a try before reporting
        _rewind(fp)
        return None
    if arr.ndim == 3 and len(axes) == 3 and "Y" in axes and "X" in axes:
        band_axis = next(i for i, a in enumerate(axes) if a not in "YX")
        arr = np.moveaxis(arr, band_axis, -1)  # bands (S, C, Q or I axis) last → [H, W, C]
    if arr.ndim in (2, 3):
        arr = _orient_array(arr, orientation)
    is_alpha = bool(extras) and int(extras[0]) in (1, 2)  # 1 associated, 2 unassociated alpha
    return arr, is_alpha


def _read_tiff(fp: Path | BinaryIO, label: str | Path | None, max_pixels: int | None) -> np.ndarray | None:
    got = _tifffile_array(fp, label, max_pixels)
    if got is None:
        return None
    arr, is_alpha = got
    if arr.ndim == 2:
        raise _bands_error(label, 1, "TIFF")
    if arr.ndim != 3:
        raise DataError(label, f"TIFF array has {arr.ndim} dimensions; an [H, W, 3] RGB raster is required")
    bands = arr.shape[2]
    if bands == 4 and is_alpha:
        arr = _drop_opaque_alpha(arr, label)
    elif bands != 3:
        raise _bands_error(label, bands, f"TIFF with {bands} bands")
    return np.ascontiguousarray(_to_uint8(arr, label))


def _read_rgb(source: ReadSource, name: str | None, max_pixels: int | None) -> np.ndarray:
    fp, label, suffix = _source(source, name)
    if suffix in TIFF_SUFFIXES:
        arr = _read_tiff(fp, label, max_pixels)
        if arr is not None:
            return arr
    try:
        img = load_image(fp, None if label is None else str(label), max_pixels=max_pixels)
    except DataError as e:
        if suffix in TIFF_SUFFIXES and str(e).endswith("not a readable image file"):
            raise DataError(label, "not a readable image file (install tifffile for multi-band TIFFs)") from None
        raise
    with img:
        return pil_to_rgb(img, label)


def read_rgb(path: str | os.PathLike[str], *, max_pixels: int | None = None) -> np.ndarray:
    """Read an RGB image file as upright ``uint8 [H, W, 3]``; one-line :class:`DataError` on any input problem
    (including an image above the pixel bound, :func:`max_image_pixels`)."""
    return _read_rgb(path, None, max_pixels)


def read_rgb_bytes(data: bytes, name: str, *, max_pixels: int | None = None) -> np.ndarray:
    """:func:`read_rgb` for an image held in memory (an upload); errors name ``name`` (the upload's file name, whose
    suffix also picks the TIFF reader)."""
    return _read_rgb(data, name, max_pixels)


def as_rgb_array(image: ImageSource, what: str = "image") -> np.ndarray:
    """Path / PIL image / ``uint8`` or 0–1 float ``[H, W, 3]`` array → ``uint8 [H, W, 3]``."""
    if isinstance(image, (str, os.PathLike)):
        return read_rgb(image)
    if isinstance(image, Image.Image):
        return pil_to_rgb(upright(image), None)
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            raise _bands_error(None, 1, f"{what} array of shape {list(image.shape)}")
        if image.ndim != 3:
            raise DataError(None, f"{what} array has shape {list(image.shape)}; [H, W, 3] is required")
        if image.shape[2] == 4:
            image = _drop_opaque_alpha(image, None)
        elif image.shape[2] != 3:
            raise _bands_error(None, image.shape[2], f"{what} array of shape {list(image.shape)}")
        return np.ascontiguousarray(_to_uint8(image, None))
    raise DataError(None, f"{what}: unsupported image type {type(image).__name__}")


def image_header(path: str | os.PathLike[str], *, max_pixels: int | None = None) -> tuple[int, int, int]:
    """``(width, height, bands)`` from the file header only (no pixel decode): the cheap check of ``data check``.

    Width and height are the upright ones (EXIF orientation applied), as :func:`read_rgb` returns the pixels. Band
    rules match :func:`read_rgb` except that an RGBA alpha is not inspected (that needs the pixels).
    """
    p = Path(path)
    _check_file(p)
    if p.suffix.lower() in TIFF_SUFFIXES:
        got = _tiff_header(p, max_pixels)
        if got is not None:
            return got
    with open_image(p, max_pixels=max_pixels) as img:
        w, h = img.size
        mode = img.mode
        bands = 3 if mode == "P" else len(img.getbands())
        if _orientation(img, decoded=False) >= 5:  # 5–8 swap width and height
            w, h = h, w
    if bands not in (3, 4) or (bands == 4 and mode not in ("RGBA", "RGBa", "RGBX")):
        raise _bands_error(p, bands, f"mode {mode}")
    return w, h, bands


def image_size(path: str | os.PathLike[str], *, max_pixels: int | None = None) -> tuple[int, int]:
    """Upright ``(width, height)`` of any image (a mask included) from its header, with the checks of
    :func:`open_image`."""
    p = Path(path)
    _check_file(p)
    with open_image(p, max_pixels=max_pixels) as img:
        w, h = img.size
        return (h, w) if _orientation(img, decoded=False) >= 5 else (w, h)


def _tiff_header(p: Path, max_pixels: int | None) -> tuple[int, int, int] | None:
    """Upright TIFF geometry with tifffile (reads tags only); None when tifffile is missing or cannot parse it."""
    try:
        import tifffile
    except ImportError:
        return None
    try:
        with tifffile.TiffFile(p) as tif:
            series = tif.series[0]
            shape, axes = tuple(int(n) for n in series.shape), str(series.axes)
            extras = tuple(getattr(tif.pages[0], "extrasamples", ()) or ())
            orientation = _tiff_orientation(tif)
    except Exception:  # noqa: BLE001 - let Pillow report on files tifffile cannot parse
        return None
    if "Y" not in axes or "X" not in axes:
        return None
    h, w = shape[axes.index("Y")], shape[axes.index("X")]
    _check_pixels(p, w, h, max_pixels)
    bands = int(np.prod([n for n, a in zip(shape, axes) if a not in "YX"], dtype=np.int64))
    alpha = bands == 4 and bool(extras) and int(extras[0]) in (1, 2)  # 1 associated, 2 unassociated alpha
    if bands != 3 and not alpha:
        raise _bands_error(p, bands, f"TIFF with {bands} bands")
    return (h, w, bands) if orientation >= 5 else (w, h, bands)


def read_mask(path: str | os.PathLike[str], binary: bool = False, *, max_pixels: int | None = None) -> np.ndarray:
    """Read a change mask as upright ``uint8 [H, W]`` class ids (EXIF orientation applied as for the images).

    Channel 0 is used for 3-channel files (LEVIR-MCI labels are stored as grey RGB). Values 0 / 128 / 255 map to
    0 / 1 / 2 (no change / road / building); with ``binary=True`` to 0 / 1 / 1 (Semantic-CC binarises at 128). Any
    other value raises a DataError naming the file and the value — a resized or JPEG-compressed label would
    otherwise silently produce wrong classes.
    """
    p = Path(path)
    with load_image(p, max_pixels=max_pixels) as img:
        if img.mode == "P":
            arr = np.asarray(img.convert("RGB"))
        elif img.mode == "1":
            arr = np.asarray(img.convert("L"))
        else:
            arr = np.asarray(img)
    if arr.ndim == 3:
        arr = arr[..., 0]  # [H, W, C] → [H, W]
    return mask_values_to_classes(arr, binary=binary, path=p)


def mask_values_to_classes(arr: np.ndarray, binary: bool = False, path: Path | None = None) -> np.ndarray:
    """Map raw label values {0, 128, 255} to class ids (see :func:`read_mask`)."""
    values = np.unique(arr)
    bad = [int(v) for v in values if int(v) not in MASK_VALUE_TO_CLASS]
    if bad:
        shown = ", ".join(str(v) for v in bad[:5]) + (", ..." if len(bad) > 5 else "")
        raise DataError(path, f"invalid mask value(s) {shown}; label pixels must be 0, 128 or 255")
    lut = np.zeros(256, dtype=np.uint8)
    for value, cls in MASK_VALUE_TO_CLASS.items():
        lut[value] = min(cls, 1) if binary else cls
    return lut[arr.astype(np.uint8)]


def change_mask_image(mask: np.ndarray) -> Image.Image:
    """A predicted change mask (``[H, W]``, > 0 = changed) as a black-and-white image (255 = changed)."""
    return Image.fromarray((np.asarray(mask) > 0).astype(np.uint8) * 255, mode="L")


def save_mask_png(mask: np.ndarray, path: str | os.PathLike[str]) -> Path:
    """A predicted change mask as a black-and-white PNG (255 = changed, :func:`change_mask_image`), written
    atomically (:func:`~changecap.data.files.atomic_write`), so ``path`` never holds a half-written mask."""
    target = Path(path)
    with atomic_write(target, binary=True) as f:
        change_mask_image(mask).save(f, format="PNG")
    return target


# ---------------------------------------------------------------------------------------------------------- resizing
def _hw(size: Size) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if h <= 0 or w <= 0:
        raise ValueError(f"size must be positive, got {size}")
    return h, w


def resize_image(img: np.ndarray, size: Size, resample: Resample = "bicubic") -> np.ndarray:
    """Resize ``uint8 [H, W, 3]`` (or ``[H, W]``) to ``size`` (int → square, or ``(height, width)``) with Pillow.

    Returns the input unchanged when it already has the requested size (no resampling blur on a no-op).
    """
    h, w = _hw(size)
    if img.shape[:2] == (h, w):
        return img
    pil = Image.fromarray(np.ascontiguousarray(img))
    return np.asarray(pil.resize((w, h), _PIL_RESAMPLE[resample]))  # PIL takes (width, height)


def resize_mask(mask: np.ndarray, size: Size) -> np.ndarray:
    """Resize a class-id mask ``[H, W]`` with nearest neighbour (never invents classes)."""
    return resize_image(mask, size, resample="nearest")


def resize_shorter_then_center_crop(img: np.ndarray, size: int, resample: Resample = "bicubic") -> np.ndarray:
    """CLIP preprocessing: shorter side to ``size`` (bicubic), then a centred ``size × size`` crop.

    Matches torchvision's ``Resize(size)`` + ``CenterCrop(size)`` on PIL images: the long side becomes
    ``int(size * long / short)`` and the crop offset is ``round((dim - size) / 2)``.
    """
    h, w = img.shape[:2]
    short, long = (h, w) if h <= w else (w, h)
    new_long = int(size * long / short)
    new_h, new_w = (size, new_long) if h <= w else (new_long, size)
    out = resize_image(img, (new_h, new_w), resample=resample)
    top = int(round((new_h - size) / 2.0))
    left = int(round((new_w - size) / 2.0))
    return out[top : top + size, left : left + size]  # [size, size(, 3)]


def fit_image(img: np.ndarray, size: int | None, resize_mode: str, resample: Resample) -> np.ndarray:
    """A dataset's geometry: ``None`` keeps the image, ``resize_mode`` ``"resize"`` gives ``size × size``,
    ``"clip"`` the shorter side to ``size`` and a centred crop (the same for images and, with ``"nearest"``, masks;
    ``changecap data pack`` stores exactly this)."""
    if size is None:
        return img
    if resize_mode == "clip":
        return resize_shorter_then_center_crop(img, size, resample=resample)
    return resize_image(img, size, resample=resample)


def to_tensor_normalized(
    img: np.ndarray, mean: tuple[float, ...] | list[float], std: tuple[float, ...] | list[float]
) -> torch.Tensor:
    """``uint8 [H, W, C]`` → ``float32 [C, H, W]`` scaled to 0–1 then ``(x - mean) / std`` per channel."""
    x = torch.from_numpy(img.astype(np.float32)).div_(255.0)  # [H, W, C]; astype copies, so always writable
    x = x.permute(2, 0, 1)  # [C, H, W]
    m = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)  # [C, 1, 1]
    s = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)  # [C, 1, 1]
    return ((x - m) / s).contiguous()


def _one_line(e: BaseException) -> str:
    """A decoder's message on one line, without the in-memory buffer's repr Pillow puts in some of them."""
    text = re.sub(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "the image", " ".join(str(e).split()))
    return text or type(e).__name__
