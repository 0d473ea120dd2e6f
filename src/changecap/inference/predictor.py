"""``ChangeCaptioner``: the user-facing predictor (segment-anything style: separate from the model).

>>> captioner = ChangeCaptioner.from_pretrained("runs/hisem/best")          # doctest: +SKIP
>>> out = captioner("before.png", "after.png")                              # doctest: +SKIP
>>> out.caption, out.change_probability                                     # doctest: +SKIP
('two buildings are built at the top', 0.97)

Inputs may be paths, PIL images, numpy arrays (``[H, W, 3]`` uint8 or float in 0–1) or tensors (``[3, H, W]``,
uint8 or float in 0–1), one pair or a batch (lists, ``[N, H, W, 3]`` arrays or ``[N, 3, H, W]`` tensors).

The predictor knows no system: it reads the model contract (``models/contract.py``) — the model's declared
capabilities, the images it reads (``image_size``) and its one entry point ``predict``, which every decoding option
reaches (``beam_size``, ``max_length``, ``sampling``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from changecap.errors import DataError, ModelError
from changecap.models.compiling import compile_with_fallback
from changecap.models.contract import Capabilities, ChangeModel, Sampling
from changecap.models.device import parse_device
from changecap.models.precision import (
    INFERENCE_PRECISIONS,
    PRECISIONS,
    autocast,
    autocast_dtype,
    cast_matmul_weights,
    int8_unavailable,
    quantize_linear_layers,
)
from changecap.models.preprocess import PREPROCESS_FILE, PreprocessConfig

ImageLike = str | os.PathLike | Image.Image | np.ndarray | torch.Tensor


@dataclass
class CaptionResult:
    """One pair's caption, its token ids, the probability that something changed (None for models without one)
    and, for models with a change-detection head, the change mask (uint8 [H, W], 1 = changed). A mask-only model
    (a change detector) gives ``caption=None`` and no tokens.

    With ``attention_maps=True`` (models that declare ``attention_maps``): ``attention`` float32 [words, g, g], row
    i the decoder's cross-attention over a g × g grid while it wrote the i-th word of ``caption.split()`` (each sums
    to 1; top-left cell first), and ``attention_box`` the ``(left, top, right, bottom)`` pixels of the input image
    that grid covers (the whole image, or the centred square a ``clip`` resize keeps). :meth:`words` pairs them."""

    caption: str | None
    change_probability: float | None
    tokens: list[int]
    mask: np.ndarray | None = None
    attention: np.ndarray | None = None
    attention_box: tuple[int, int, int, int] | None = None

    def words(self) -> list[str]:
        """The caption's words, the order of the rows of ``attention``."""
        return [] if self.caption is None else self.caption.split()

    def mask_image(self) -> Image.Image:
        """The change mask as a black-and-white PIL image (255 = changed)."""
        from changecap.data.image_io import change_mask_image

        if self.mask is None:
            raise ModelError("this model predicts no change mask")
        return change_mask_image(self.mask)


def grids(maps: torch.Tensor) -> np.ndarray:
    """Attention maps [words, L] over a row-major square grid → float32 numpy [words, g, g]."""
    side = math.isqrt(int(maps.shape[-1]))
    return maps.float().cpu().reshape(-1, side, side).numpy()  # [words, g, g]


def _to_uint8_hwc(img: ImageLike, what: str) -> np.ndarray:
    """Any supported single image → uint8 ``[H, W, 3]``, with one-line errors for wrong bands or types."""
    from changecap.data.image_io import read_rgb, upright

    if isinstance(img, (str, os.PathLike)):
        return read_rgb(img)
    if isinstance(img, Image.Image):
        img = upright(img)  # EXIF orientation, as for files
        if img.mode not in ("RGB",):
            bands = len(img.getbands())
            if bands != 3:
                raise DataError(None, f"{what} image has {bands} band(s) ({img.mode}); an RGB image is required")
            img = img.convert("RGB")
        return np.asarray(img, dtype=np.uint8)
    if isinstance(img, torch.Tensor):
        t = img.detach().cpu()
        if t.ndim != 3:
            raise DataError(None, f"{what} tensor must be [3, H, W], got shape {list(t.shape)}")
        if t.shape[0] != 3:
            raise DataError(None, f"{what} tensor has {t.shape[0]} band(s); [3, H, W] RGB is required")
        arr = t.permute(1, 2, 0).numpy()  # [H, W, 3]
    elif isinstance(img, np.ndarray):
        arr = img
        if arr.ndim == 2:
            raise DataError(None, f"{what} array is single-band {list(arr.shape)}; an RGB [H, W, 3] array is required")
        if arr.ndim != 3 or arr.shape[2] != 3:
            bands = arr.shape[2] if arr.ndim == 3 else "?"
            raise DataError(None, f"{what} array has shape {list(arr.shape)} ({bands} bands); [H, W, 3] is required")
    else:
        raise DataError(None, f"{what}: unsupported image type {type(img).__name__}")
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    arr = arr.astype(np.float32)
    if arr.size and (arr.min() < 0.0 or arr.max() > 1.0):
        raise DataError(None, f"{what}: float images must be in [0, 1], got range [{arr.min():.3g}, {arr.max():.3g}]")
    return np.ascontiguousarray(np.round(arr * 255.0).astype(np.uint8))


def split_batch(x: Any) -> list[ImageLike] | None:
    """Return a list of single images if ``x`` is a batch, else None."""
    if isinstance(x, (list, tuple)):
        return list(x)
    if isinstance(x, np.ndarray) and x.ndim == 4:
        return list(x)
    if isinstance(x, torch.Tensor) and x.ndim == 4:
        return list(x)
    return None


def preprocess_pair(
    before: ImageLike, after: ImageLike, cfg: PreprocessConfig, names: tuple[str, str] = ("before", "after")
) -> torch.Tensor:
    """One pair → float ``[2, 3, S, S]``. Dates must have the same size (a mismatch is a user error)."""
    return prepare_pair_and_size(before, after, cfg, names)[0]


def prepare_pair_and_size(
    before: ImageLike, after: ImageLike, cfg: PreprocessConfig, names: tuple[str, str]
) -> tuple[torch.Tensor, tuple[int, int]]:
    """One pair → (``[2, 3, S, S]``, the images' ``(H, W)``), each image decoded once."""
    from changecap.data.image_io import resize_image, resize_shorter_then_center_crop, to_tensor_normalized

    b = _to_uint8_hwc(before, names[0])
    a = _to_uint8_hwc(after, names[1])
    if b.shape != a.shape:
        if isinstance(after, (str, os.PathLike)):  # files: name them
            before_name = str(before) if isinstance(before, (str, os.PathLike)) else names[0]
            raise DataError(
                after,
                f"{a.shape[1]}×{a.shape[0]} pixels but the before image {before_name} is {b.shape[1]}×{b.shape[0]}; "
                "both dates must have the same size",
            )
        raise DataError(
            None,
            f"{names[0]} is {b.shape[1]}×{b.shape[0]} but {names[1]} is {a.shape[1]}×{a.shape[0]}; "
            "both dates must have the same size",
        )
    out = []
    for img in (b, a):
        if cfg.resize_mode == "clip":
            img = resize_shorter_then_center_crop(img, cfg.image_size)
        else:
            img = resize_image(img, cfg.image_size, resample="bicubic")
        out.append(to_tensor_normalized(img, cfg.mean, cfg.std))  # [3, S, S]
    return torch.stack(out), (int(b.shape[0]), int(b.shape[1]))  # [2, 3, S, S], (H, W)


def prepared_chunks(
    before: Any, after: Any, cfg: PreprocessConfig, batch_size: int
) -> tuple[bool, Iterator[tuple[torch.Tensor, list[tuple[int, int]]]]]:
    """Split one pair or a batch of pairs into preprocessed chunks of at most ``batch_size`` pairs.

    Returns ``(single, chunks)``: ``single`` says whether one pair (not a batch) was given; each chunk is the
    stacked pairs ``[n, 2, 3, S, S]`` and the images' original ``(H, W)`` sizes. Shared by every predictor so
    that batching, input checks and error names are the same for PyTorch and ONNX.
    """
    b_list, a_list = split_batch(before), split_batch(after)
    single = b_list is None and a_list is None
    if single:
        b_list, a_list = [before], [after]
    elif b_list is None or a_list is None or len(b_list) != len(a_list):
        raise DataError(None, "before and after must both be single images or batches of the same length")

    def chunks() -> Iterator[tuple[torch.Tensor, list[tuple[int, int]]]]:
        for start in range(0, len(b_list), batch_size):
            pairs, sizes = [], []
            chunk = zip(b_list[start : start + batch_size], a_list[start : start + batch_size], strict=True)
            for k, (b, a) in enumerate(chunk):
                names = ("before", "after") if single else (f"before[{start + k}]", f"after[{start + k}]")
                pair, size = prepare_pair_and_size(b, a, cfg, names)
                pairs.append(pair)
                sizes.append(size)
            yield torch.stack(pairs), sizes  # [n, 2, 3, S, S]

    return single, chunks()


class ChangeCaptioner:
    """Caption image pairs with a saved changecap model.

    ``precision``: ``fp32`` (default; the tokens of training-time validation) or ``bf16``: the linear and
    convolution weights cast to bf16 once (:func:`~changecap.models.precision.cast_matmul_weights`) and the model
    run under bf16 autocast — bit-identical to autocast alone, without re-casting the weights on every call. The
    vocabulary projection stays fp32 (:class:`~changecap.models.precision.Fp32Linear`), which keeps greedy tokens
    99.7–100 % equal to fp32 on trained models (``benchmarks/bench_precision_agreement.py``). bf16
    is fast on GPUs and on CPUs with bf16 matrix instructions (AMX, AVX-512 BF16); on other CPUs it is much slower
    than fp32 (``benchmarks/bench_peak.py`` measures both on the machine at hand).

    ``int8`` (CPU only): the linear layers replaced by int8 ones once
    (:func:`~changecap.models.precision.quantize_linear_layers`: int8 weights per output channel, activations
    quantised per row on every call), everything else in fp32; the vocabulary projection, routers and gates stay
    float. Fastest on CPUs with VNNI (``avx512_vnni`` / ``avx_vnni``); a device or PyTorch build without the int8
    kernels is a :class:`~changecap.errors.ModelError`. Tokens stay close to fp32 but not identical
    (``benchmarks/bench_precision_agreement.py`` measures both).

    ``compile=True`` runs the encoder through ``torch.compile`` (inductor; the first batch of each shape pays the
    compilation), falling back to eager execution with one warning when compilation fails.
    """

    def __init__(
        self,
        model: ChangeModel,
        vocab: Any,
        preprocess: PreprocessConfig,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        compile: bool = False,  # noqa: A002 - the torch.compile switch, named as in the CLI (--compile)
    ) -> None:
        if precision not in INFERENCE_PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(INFERENCE_PRECISIONS)}, got {precision!r}")
        self.device = parse_device(device)
        if precision == "int8" and (reason := int8_unavailable(self.device)) is not None:
            raise ModelError(reason)  # before the model moves anywhere
        self.model = model.eval().to(self.device)
        self.vocab = vocab
        self.preprocess = preprocess
        self.precision = precision
        if model.image_size is None:
            raise ModelError(f"this {model.architecture} model cannot read images (it was built or converted without "
                             "its image encoder, e.g. --no-encoder)")  # fmt: skip
        if precision == "int8":
            quantize_linear_layers(self.model)
        elif PRECISIONS[precision] is not None:
            cast_matmul_weights(self.model, PRECISIONS[precision])
        if compile:  # the model names the part that holds nearly all the FLOPs; decoding loops stay eager
            compile_with_fallback(model.compile_target, "the encoder")

    @classmethod
    def from_pretrained(
        cls,
        model_dir: str | os.PathLike[str],
        device: str | torch.device | None = None,
        precision: str = "fp32",
        compile: bool = False,  # noqa: A002 - as in __init__
    ) -> ChangeCaptioner:
        """Load a saved model directory or a Hugging Face Hub repo id (``owner/name``), any registered architecture.

        ``device`` defaults to CUDA when available (the CPU for ``int8``, which runs there only); one this machine
        lacks is a one-line error before anything is loaded (:func:`~changecap.models.device.parse_device`).
        Offline (``HF_HUB_OFFLINE=1``) a Hub id loads from the local cache or fails with a one-line error.
        """
        from changecap.models.io import load_model_bundle

        # int8 runs on the CPU only: its default device is the CPU, not CUDA; a request for another device is
        # refused for that reason first, whether or not this machine has that device
        if precision == "int8":
            wanted = torch.device("cpu" if device is None else device)
            if (reason := int8_unavailable(wanted)) is not None:
                raise ModelError(reason)  # before the model is loaded
        device = parse_device("cpu" if device is None and precision == "int8" else device)
        model, config, vocab = load_model_bundle(model_dir)
        takes = model.image_size  # the side the model's input must have; None when it cannot read images
        folder = model.model_dir or model_dir  # the local copy of a Hub model
        preprocess = PreprocessConfig.load(folder, default_image_size=int(takes or 224))
        if takes is not None and preprocess.image_size != int(takes):
            raise DataError(
                Path(folder) / PREPROCESS_FILE,
                f"is {preprocess.image_size} but the model takes {takes}×{takes} px images",
                field="image_size",
            )
        return cls(model, vocab, preprocess, device, precision, compile)

    @property
    def architecture(self) -> str:
        """The model's architecture (its registry name)."""
        return self.model.architecture

    @property
    def capabilities(self) -> Capabilities:
        """What the model can do (declared by its architecture: captions, change probability, change mask, …)."""
        return self.model.capabilities

    @property
    def max_length(self) -> int:
        """The caption length in data-vocabulary tokens the model was built for (its config's)."""
        return int(self.model.config.max_length)

    @torch.inference_mode()
    def caption_tensor(
        self,
        images: torch.Tensor,
        beam_size: int | None = None,
        max_length: int | None = None,
        sampling: Sampling | None = None,
        attention_maps: bool = False,
    ) -> list[CaptionResult]:
        """Preprocessed ``[B, 2, 3, S, S]`` → one result per pair (masks at the model's resolution, for models with
        one), through the model's one entry point ``predict`` (decoding options: ``ChangeModel.predict``; None
        takes the model's own). ``attention_maps``: also the attention grids (no ``attention_box``: that needs the
        input images' sizes, which :meth:`__call__` has)."""
        images = images.to(self.device)
        with autocast(self.device, autocast_dtype(self.precision)):
            out = self.model.predict(images, beam_size=beam_size, max_length=max_length, sampling=sampling,
                                     attention_maps=attention_maps)  # fmt: skip
        masks = None if out.mask is None else out.mask.cpu().numpy().astype(np.uint8)  # [B, S, S]
        probs = out.change_probability
        if probs is not None and not bool(torch.isfinite(probs).all()):
            # NaN in means NaN out: never hand on a NaN probability (and the empty caption decoded beside it)
            where = self.model.model_dir or "the model"
            raise ModelError(
                f"{where}: the change probability is not finite (NaN or inf); the weights or preprocess.json hold "
                f"bad values, or precision {self.precision} overflowed"
            )
        return [
            CaptionResult(
                caption=None if out.texts is None else out.texts[i],
                change_probability=None if probs is None else float(probs[i]),
                tokens=[] if out.tokens is None else out.tokens[i],
                mask=None if masks is None else masks[i],
                attention=None if out.attention_maps is None else grids(out.attention_maps[i]),
            )
            for i in range(len(out))
        ]

    def attention_box(self, size: tuple[int, int]) -> tuple[int, int, int, int]:
        """The pixels ``(left, top, right, bottom)`` of an ``(H, W)`` input image the model's grid covers: all of it
        (``resize``), or the centred square of the shorter side (``clip``: resize the shorter side, crop)."""
        h, w = size
        if self.preprocess.resize_mode != "clip":
            return 0, 0, w, h
        side = min(h, w)
        left, top = int(round((w - side) / 2)), int(round((h - side) / 2))
        return left, top, left + side, top + side

    @staticmethod
    def mask_at_size(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """A mask at the model's resolution → at the input image's ``(H, W)`` (nearest: a mask stays a mask)."""
        if mask.shape == size:
            return mask
        return np.asarray(Image.fromarray(mask).resize((size[1], size[0]), Image.NEAREST))

    def __call__(
        self,
        before: ImageLike | Sequence[ImageLike],
        after: ImageLike | Sequence[ImageLike],
        *,
        beam_size: int | None = None,
        max_length: int | None = None,
        sampling: Sampling | None = None,
        attention_maps: bool = False,
        batch_size: int = 16,
    ) -> CaptionResult | list[CaptionResult]:
        """Caption one pair (returns a :class:`CaptionResult`) or a batch (returns a list). Decoding options as
        :meth:`caption_tensor`; ``attention_maps=True`` adds each caption's word attention (a model that declares
        no ``attention_maps`` capability refuses it in one line)."""
        single, chunks = prepared_chunks(before, after, self.preprocess, batch_size)
        results: list[CaptionResult] = []
        for pairs, sizes in chunks:
            batch = self.caption_tensor(pairs, beam_size=beam_size, max_length=max_length, sampling=sampling,
                                        attention_maps=attention_maps)  # fmt: skip
            for res, size in zip(batch, sizes, strict=True):
                if res.mask is not None:
                    res.mask = self.mask_at_size(res.mask, size)
                if res.attention is not None:
                    res.attention_box = self.attention_box(size)
            results += batch
        return results[0] if single else results
