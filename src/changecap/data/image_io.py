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
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from changecap.errors import DataError

ImageSource = str | os.PathLike[str] | Image.Image | np.ndarray
Resample = Literal["bicubic", "bilinear", "nearest"]
Size = int | tuple[int, int]

TIFF_SUFFIXES = frozenset({".tif", ".tiff"})

# Mean / std per RGB channel on the 0–1 scale (spec §7). Peers that work on the 0–255 scale are divided by 255
# here so every setting composes with ``to_tensor_normalized`` the same way.
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

# LEVIR-MCI label values → class ids (0 no change, 1 road change, 2 building change), spec §2.
MASK_VALUE_TO_CLASS: dict[int, int] = {0: 0, 128: 1, 255: 2}

_PIL_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}


# ---------------------------------------------------------------------------------------------------------- reading
def _check_file(path: Path) -> None:
    if not path.exists():
        raise DataError(path, "image file not found")
    if not path.is_file():
        raise DataError(path, "expected an image file, found a directory")


def _bands_error(path: Path | None, bands: int, detail: str) -> DataError:
    what = "single-band (grayscale)" if bands == 1 else f"{bands}-band"
    return DataError(path, f"{what} image ({detail}); an RGB (3-band) image is required")


def _to_uint8(arr: np.ndarray, path: Path | None) -> np.ndarray:
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


def _drop_opaque_alpha(arr: np.ndarray, path: Path | None) -> np.ndarray:
    """``[H, W, 4]`` → ``[H, W, 3]`` when the 4th band is a fully opaque alpha, else a DataError."""
    alpha = arr[..., 3]
    opaque = 255 if arr.dtype == np.uint8 else alpha.max(initial=0)
    if not (alpha == opaque).all():
        raise DataError(path, "RGBA image with a transparent alpha channel; an opaque RGB image is required")
    return arr[..., :3]


def pil_to_rgb(img: Image.Image, path: Path | None = None) -> np.ndarray:
    """Convert a decoded PIL image to ``uint8 [H, W, 3]`` following the module's band rules."""
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


def _tifffile_array(path: Path) -> tuple[np.ndarray, bool] | None:
    """Read a TIFF with tifffile as ``[H, W, C]`` plus whether its 4th band is flagged as alpha; None if unusable."""
    try:
        import tifffile
    except ImportError:
        return None
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            arr = series.asarray()
            axes = str(series.axes)
            extras = tuple(getattr(tif.pages[0], "extrasamples", ()) or ())
    except Exception:  # noqa: BLE001 - any decode problem: let Pillow have a try before reporting
        return None
    if arr.ndim == 3 and len(axes) == 3 and "Y" in axes and "X" in axes:
        band_axis = next(i for i, a in enumerate(axes) if a not in "YX")
        arr = np.moveaxis(arr, band_axis, -1)  # bands (S, C, Q or I axis) last → [H, W, C]
    is_alpha = bool(extras) and int(extras[0]) in (1, 2)  # 1 associated, 2 unassociated alpha
    return arr, is_alpha


def _read_tiff(path: Path) -> np.ndarray | None:
    got = _tifffile_array(path)
    if got is None:
        return None
    arr, is_alpha = got
    if arr.ndim == 2:
        raise _bands_error(path, 1, "TIFF")
    if arr.ndim != 3:
        raise DataError(path, f"TIFF array has {arr.ndim} dimensions; an [H, W, 3] RGB raster is required")
    bands = arr.shape[2]
    if bands == 4 and is_alpha:
        arr = _drop_opaque_alpha(arr, path)
    elif bands != 3:
        raise _bands_error(path, bands, f"TIFF with {bands} bands")
    return np.ascontiguousarray(_to_uint8(arr, path))


def read_rgb(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an RGB image file as ``uint8 [H, W, 3]``; one-line :class:`DataError` on any input problem."""
    p = Path(path)
    _check_file(p)
    if p.suffix.lower() in TIFF_SUFFIXES:
        arr = _read_tiff(p)
        if arr is not None:
            return arr
    try:
        with Image.open(p) as img:
            img.load()
            return pil_to_rgb(img, p)
    except UnidentifiedImageError:
        hint = " (install tifffile for multi-band TIFFs)" if p.suffix.lower() in TIFF_SUFFIXES else ""
        raise DataError(p, f"not a readable image file{hint}") from None
    except DataError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise DataError(p, f"corrupt image ({_one_line(e)})") from None


def as_rgb_array(image: ImageSource, what: str = "image") -> np.ndarray:
    """Path / PIL image / ``uint8`` or 0–1 float ``[H, W, 3]`` array → ``uint8 [H, W, 3]``."""
    if isinstance(image, (str, os.PathLike)):
        return read_rgb(image)
    if isinstance(image, Image.Image):
        return pil_to_rgb(image, None)
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


def image_header(path: str | os.PathLike[str]) -> tuple[int, int, int]:
    """``(width, height, bands)`` from the file header only (no pixel decode): the cheap check of ``data check``.

    Band rules match :func:`read_rgb` except that an RGBA alpha is not inspected (that needs the pixels).
    """
    p = Path(path)
    _check_file(p)
    if p.suffix.lower() in TIFF_SUFFIXES:
        got = _tiff_header(p)
        if got is not None:
            return got
    try:
        with Image.open(p) as img:
            w, h = img.size
            mode = img.mode
            bands = 3 if mode == "P" else len(img.getbands())
    except UnidentifiedImageError:
        raise DataError(p, "not a readable image file") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise DataError(p, f"corrupt image ({_one_line(e)})") from None
    if bands not in (3, 4) or (bands == 4 and mode not in ("RGBA", "RGBa", "RGBX")):
        raise _bands_error(p, bands, f"mode {mode}")
    return w, h, bands


def _tiff_header(p: Path) -> tuple[int, int, int] | None:
    """TIFF geometry with tifffile (reads tags only); None when tifffile is missing or cannot parse the file."""
    try:
        import tifffile
    except ImportError:
        return None
    try:
        with tifffile.TiffFile(p) as tif:
            series = tif.series[0]
            shape, axes = tuple(int(n) for n in series.shape), str(series.axes)
            extras = tuple(getattr(tif.pages[0], "extrasamples", ()) or ())
    except Exception:  # noqa: BLE001 - let Pillow report on files tifffile cannot parse
        return None
    if "Y" not in axes or "X" not in axes:
        return None
    h, w = shape[axes.index("Y")], shape[axes.index("X")]
    bands = int(np.prod([n for n, a in zip(shape, axes) if a not in "YX"], dtype=np.int64))
    alpha = bands == 4 and bool(extras) and int(extras[0]) in (1, 2)  # 1 associated, 2 unassociated alpha
    if bands != 3 and not alpha:
        raise _bands_error(p, bands, f"TIFF with {bands} bands")
    return w, h, bands


def read_mask(path: str | os.PathLike[str], binary: bool = False) -> np.ndarray:
    """Read a change mask as ``uint8 [H, W]`` class ids.

    Channel 0 is used for 3-channel files (LEVIR-MCI labels are stored as grey RGB). Values 0 / 128 / 255 map to
    0 / 1 / 2 (no change / road / building); with ``binary=True`` to 0 / 1 / 1 (Semantic-CC binarises at 128). Any
    other value raises a DataError naming the file and the value — a resized or JPEG-compressed label would
    otherwise silently produce wrong classes.
    """
    p = Path(path)
    _check_file(p)
    try:
        with Image.open(p) as img:
            img.load()
            if img.mode == "P":
                img = img.convert("RGB")
            elif img.mode == "1":
                img = img.convert("L")
            arr = np.asarray(img)
    except UnidentifiedImageError:
        raise DataError(p, "not a readable image file") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise DataError(p, f"corrupt image ({_one_line(e)})") from None
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
    return " ".join(str(e).split()) or type(e).__name__
