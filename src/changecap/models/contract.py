"""The model contract: what every changecap system provides, what is optional, and how it says so.

The duties are split as transformers splits ``PreTrainedModel`` / ``ModelOutput`` and segment-anything splits
``Sam`` / ``SamPredictor``:

* the **model** (a :class:`ChangeModel`, an ``nn.Module``) takes preprocessed image pairs ``[B, 2, 3, S, S]`` and
  returns one :class:`Prediction` through one entry point, :meth:`ChangeModel.predict`, which takes every decoding
  option;
* the **predictor** (``changecap.inference.ChangeCaptioner``) turns files, arrays and PIL images into those tensors
  (``preprocess.json``), picks the device and precision, batches, and resizes masks back to the images' size.

What a system can do is **declared**, never guessed: its registry entry (``Architecture.capabilities`` in
``models/registry.py``) holds a :class:`Capabilities`, and every consumer (trainer, validation, ``evaluate``,
``ChangeCaptioner``, ``caption --pairs``, ``scene``, ``serve``, the reports, ``summary``, ONNX export) reads it
from ``model.capabilities`` instead of probing the model's attributes.

Every system provides (:class:`ChangeModel`):

============================  ===========================================================================
``config``                    the config it was built from (``registry.ModelConfig``: ``architecture``,
                              ``vocab_size``, ``max_length``, ``to_dict``, ``validate``)
``vocab``                     the data :class:`~changecap.data.vocab.Vocabulary` its caption ids refer to (set
                              by ``load_model`` and the trainer; a model without captions may leave it None)
``model_dir``                 the folder it was loaded from (``load_model``), else None
``capabilities``              its architecture's declared :class:`Capabilities`
``image_size``                the side of the square images it reads; None when it cannot read images (HiSem
                              converted without its backbone runs from backbone tokens only)
``infer(images, decoding)``   **what a system implements**: a :class:`RawPrediction` (captions as token-id
                              lists *or* strings, or None; change probability; mask logits)
``predict(images, ...)``      **what callers use**: options checked against the capabilities, ``infer``, its
                              output normalised once into a :class:`Prediction`
``parameter_groups()``        optimiser groups by part (default: none declared, one group)
``saved_state_dict()``        what ``model.safetensors`` holds (default: the whole state dict)
``compile_target``            the module ``compile=True`` compiles (default: the model; systems name their
                              image encoder, which holds nearly all the FLOPs)
============================  ===========================================================================

What it can do is one :class:`Capabilities` per architecture (declared in its registry entry):

========================  ===============================================================================
``captions``              writes captions: ``Prediction.texts`` and ``Prediction.tokens``
``change_probability``    an image-level probability that something changed: ``Prediction.change_probability``
``change_mask``           a per-pixel change mask (a change-detection head): ``Prediction.mask_logits`` / ``.mask``
``beam_search``           honours ``beam_size > 1``
``sampling``              honours ``sampling=Sampling(...)`` (nucleus sampling)
``onnx``                  provides ONNX graphs (``onnx_export``), run by ``changecap caption --backend onnx``
``attention_maps``        per generated word, the caption decoder's cross-attention over the image grid
                          (``Prediction.attention_maps``, on request), for a word-level attention view
========================  ===============================================================================

Attention maps are asked for with ``predict(..., attention_maps=True)``. For each pair they are a float32 tensor
``[words, L]``: one row per word of its caption (the ids of ``Prediction.tokens`` after ``<START>`` up to
``<END>``, ``<NULL>`` skipped — the words of ``Prediction.texts``, in order), each row a distribution over the
``L = g × g`` cells of a square grid over the image the model read, row-major (top-left cell first). HiSem, the plain
baseline and DFM give the last decoder layer's cross-attention averaged over its heads
(:meth:`~changecap.models.parts.caption_decoder.TransformerCaptionDecoder.cross_attention`), over the fused patch
grid their decoder reads.

Optional, each behind a capability: ``onnx_export(image_size, batch)`` (``onnx``) returns the system's ONNX graphs
(:class:`OnnxExport`), defined next to its model as segment-anything keeps ``SamOnnxModel`` beside ``Sam``.

A system that cannot honour a decoding option says so in a one-line :class:`~changecap.errors.ModelError` (e.g.
``beam_size=3`` for a system without beam search, sampling for one without sampling); options left at None take
the system's own default (:class:`Decoding`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from changecap.data.vocab import Vocabulary
from changecap.errors import ModelError
from changecap.models.parts.change_masks import predict_mask
from changecap.models.registry import Capabilities, get_architecture

__all__ = [
    "Capabilities",
    "ChangeModel",
    "Decoding",
    "OnnxExport",
    "OnnxGraph",
    "Prediction",
    "RawPrediction",
    "Sampling",
    "normalise",
]


# ---------------------------------------------------------------------------------------------------- decoding
@dataclass(frozen=True)
class Sampling:
    """Nucleus sampling (systems with the ``sampling`` capability): keep the smallest set of tokens whose
    probability reaches ``top_p``, at ``temperature``; ``seed`` fixes the draw, so the same inputs give the same
    captions."""

    top_p: float = 0.9
    temperature: float = 1.0
    seed: int = 0

    def check(self) -> None:
        if not 0.0 < self.top_p <= 1.0:
            raise ModelError(f"sampling top_p must be in (0, 1], got {self.top_p}")
        if not self.temperature > 0.0 or not math.isfinite(self.temperature):
            raise ModelError(f"sampling temperature must be a finite number > 0, got {self.temperature}")


@dataclass(frozen=True)
class Decoding:
    """Every decoding option of :meth:`ChangeModel.predict`; None takes the system's own default.

    * ``beam_size``: 1 = greedy, k > 1 = beam search with k beams (``beam_search``). Default: greedy for changecap's
      caption decoder; Semantic-CC's ``caption.generation`` (greedy, beam or sampling as configured).
    * ``max_length``: the most decoding steps, in the system's own tokens: the data vocabulary's for changecap's
      caption decoder (at most its ``max_length``), the LLM's new tokens for Semantic-CC. Default: the decoder's
      ``max_length``; Semantic-CC's ``caption.generation.max_new_tokens``.
    * ``length_penalty``: beam search ranks finished captions by ``score / length ** length_penalty``. Default 0
      (no normalisation) for changecap's caption decoder; the LLM's generation default for Semantic-CC.
    * ``sampling``: nucleus sampling instead of greedy or beam search (``sampling``).
    * ``attention_maps``: also return the cross-attention maps (``attention_maps``).

    A model without captions has nothing to decode: ``max_length`` and ``length_penalty`` bound nothing there and
    ``beam_size=1`` is what it does anyway; beam search, sampling and attention maps are refused.
    """

    beam_size: int | None = None
    max_length: int | None = None
    length_penalty: float | None = None
    sampling: Sampling | None = None
    attention_maps: bool = False

    def check(self, capabilities: Capabilities, name: str) -> None:
        """One-line ModelError for an option ``name`` (the architecture) cannot honour."""
        if self.beam_size is not None and self.beam_size < 1:
            raise ModelError(f"beam_size must be >= 1, got {self.beam_size}")
        if self.max_length is not None and self.max_length < 1:
            raise ModelError(f"max_length must be >= 1, got {self.max_length}")
        if self.length_penalty is not None and (self.length_penalty < 0 or not math.isfinite(self.length_penalty)):
            raise ModelError(f"length_penalty must be a finite number >= 0, got {self.length_penalty}")
        beams = self.beam_size is not None and self.beam_size > 1
        if not capabilities.captions and (beams or self.sampling is not None or self.attention_maps):
            what = "beam search" if beams else "sampling" if self.sampling is not None else "attention maps"
            raise ModelError(f"{name} writes no captions: {what} does not apply")
        if beams and not capabilities.beam_search:
            raise ModelError(f"{name} has no beam search: beam_size must be 1, got {self.beam_size}")
        if self.sampling is not None:
            if not capabilities.sampling:
                raise ModelError(f"{name} has no sampling: decode greedily or with beam search")
            if beams:
                raise ModelError(f"choose beam search (beam_size={self.beam_size}) or sampling, not both")
            self.sampling.check()
        if self.attention_maps and not capabilities.attention_maps:
            raise ModelError(f"{name} gives no attention maps")


# ---------------------------------------------------------------------------------------------------- outputs
@dataclass
class RawPrediction:
    """What a system's :meth:`ChangeModel.infer` returns for a batch of B pairs, each field None when the system
    lacks that output. Captions come in the system's own shape: token-id lists of the data vocabulary
    (``<START>`` first, ``<END>`` last when produced) or, for a system with its own tokenizer (an LLM), strings."""

    captions: Sequence[Sequence[int]] | Sequence[str] | None = None
    change_probability: torch.Tensor | None = None  # [B], P(changed)
    mask_logits: torch.Tensor | None = None  # [B, K, S, S]: K = 1 (logit > 0 = changed) or K ≥ 2 classes (0 = none)
    attention_maps: list[torch.Tensor] | None = None  # per pair [words, L]: cross-attention over the L grid cells
    # (captions as token ids only: a row per word of the caption)


@dataclass
class Prediction:
    """The one output of :meth:`ChangeModel.predict` for a batch of B pairs; a field is None when the system lacks
    that output (its :class:`Capabilities` say which)."""

    texts: list[str] | None  # captions as text
    tokens: list[list[int]] | None  # the same captions as data-vocabulary ids (<START> first, <END> last if produced)
    change_probability: torch.Tensor | None  # [B] float32, P(changed)
    mask_logits: torch.Tensor | None  # [B, K, S, S] at the model's resolution
    mask: torch.Tensor | None  # [B, S, S] int64, 1 = changed (from mask_logits)
    attention_maps: list[torch.Tensor] | None = None  # per pair [words, L]
    size: int = field(default=0, repr=False)  # B

    def __len__(self) -> int:
        return self.size


def normalise(raw: RawPrediction, capabilities: Capabilities, batch: int, vocab: Vocabulary | None,
              name: str, *, attention_maps: bool = False) -> Prediction:  # fmt: skip
    """A system's :class:`RawPrediction` → the :class:`Prediction` every consumer reads: captions both as text and
    as data-vocabulary ids whatever shape the system returned them in, the probability in float32, the mask from
    its logits, the attention maps (``attention_maps``: asked for) as float32. An output that contradicts the
    declared capabilities or the request is a bug in the system (TypeError)."""
    outputs = {"captions": raw.captions, "change_probability": raw.change_probability, "change_mask": raw.mask_logits}
    for capability, value in outputs.items():
        if (value is not None) != getattr(capabilities, capability):
            has = "returned" if value is not None else "did not return"
            raise TypeError(f"{name} {has} {capability.replace('_', ' ')} but declares capabilities "
                            f"{capabilities.names()}")  # fmt: skip
    texts = tokens = None
    if raw.captions is not None:
        if len(raw.captions) != batch:
            raise TypeError(f"{name} returned {len(raw.captions)} captions for {batch} pairs")
        if vocab is None:
            raise ModelError(f"{name}: the model has no vocabulary (load it with load_model, or set model.vocab)")
        texts, tokens = [], []
        for caption in raw.captions:
            if isinstance(caption, str):  # an LLM's text: kept, and its ids in the data vocabulary
                texts.append(caption)
                tokens.append(vocab.encode(caption, max_length=len(caption.split()) + 2, pad=False))
            else:
                ids = [int(t) for t in caption]
                tokens.append(ids)
                texts.append(vocab.decode(ids))
    prob = None if raw.change_probability is None else raw.change_probability.float()
    mask = None if raw.mask_logits is None else predict_mask(raw.mask_logits)
    maps = _checked_attention(raw.attention_maps, attention_maps, tokens, vocab, batch, name)
    return Prediction(texts, tokens, prob, raw.mask_logits, mask, maps, batch)


def _checked_attention(maps: list[torch.Tensor] | None, asked: bool, tokens: list[list[int]] | None,
                       vocab: Vocabulary | None, batch: int, name: str) -> list[torch.Tensor] | None:  # fmt: skip
    """The attention maps as the contract states them (module docstring), or a TypeError naming what is wrong."""
    if (maps is not None) != asked:
        raise TypeError(f"{name} {'did not return' if asked else 'returned'} attention maps "
                        f"{'it was asked for' if asked else 'it was not asked for'}")  # fmt: skip
    if maps is None:
        return None
    if tokens is None or vocab is None or len(maps) != batch:
        raise TypeError(f"{name} returned attention maps for {len(maps)} pairs but {batch} token captions")
    out = []
    for i, (m, ids) in enumerate(zip(maps, tokens, strict=True)):
        words, cells = len(vocab.strip(ids)), int(m.shape[-1]) if m.dim() == 2 else -1
        if m.dim() != 2 or m.shape[0] != words or math.isqrt(cells) ** 2 != cells:
            raise TypeError(f"{name} returned attention maps of shape {list(m.shape)} for pair {i}; expected "
                            f"[{words}, g*g] (one row per word, a square grid)")  # fmt: skip
        out.append(m.float())
    return out


# ---------------------------------------------------------------------------------------------------- ONNX
@dataclass
class OnnxGraph:
    """One graph of an ONNX export: the module to trace, example inputs, and its inputs' and outputs' names and
    dynamic axes (``{name: {axis: label}}``), as ``torch.onnx.export`` takes them."""

    module: nn.Module
    example_inputs: tuple[torch.Tensor, ...]
    input_names: list[str]
    output_names: list[str]
    dynamic_axes: dict[str, dict[int, str]]


@dataclass
class OnnxExport:
    """A system's ONNX graphs (file name → graph) and what the runtime that reads them needs to know (``meta``,
    written to ``onnx_config.json``; ``meta["runtime"]`` names the runtime protocol)."""

    graphs: dict[str, OnnxGraph]
    meta: dict[str, Any]


# ---------------------------------------------------------------------------------------------------- the model
class ChangeModel(nn.Module):
    """Base class of every changecap system (see the module docstring for the whole contract).

    A subclass builds its parts in ``__init__``, implements :meth:`infer` and the :attr:`image_size` property, and
    overrides the optional hooks it has. ``forward`` stays the system's own (what its training objective calls).
    """

    def __init__(self) -> None:
        super().__init__()
        self.config: Any = None  # set by the builder (the ModelConfig this model was built from)
        self.vocab: Vocabulary | None = None  # set by load_model / the trainer (the ids its captions use)
        self.model_dir: Path | None = None  # set by load_model (the folder, or the local copy of a Hub model)

    # ------------------------------------------------------------------ declarations
    @property
    def architecture(self) -> str:
        """The registry name of this model's architecture (``config.architecture``)."""
        if self.config is None:
            raise ModelError(f"{type(self).__name__} has no config (build it with build_model or load_model)")
        return str(self.config.architecture)

    @property
    def capabilities(self) -> Capabilities:
        """What this model can do: its architecture's declaration in the registry."""
        return get_architecture(self.architecture).capabilities

    @property
    def image_size(self) -> int | None:
        """The side of the square images ``[B, 2, 3, S, S]`` it reads; None when it cannot read images."""
        raise NotImplementedError(f"{type(self).__name__} does not say which images it reads (image_size)")

    @property
    def compile_target(self) -> nn.Module:
        """The module ``torch.compile`` runs when a predictor asks for compilation (the model; systems name their
        image encoder, which holds nearly all the FLOPs, and keep their decoding loops eager)."""
        return self

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Optimiser groups by part (``optim.group_lr`` addresses them); parameters in none form the group
        ``other`` (``model`` when no group is declared)."""
        return {}

    def saved_state_dict(self) -> dict[str, torch.Tensor]:
        """What ``model.safetensors`` holds (a system may leave out weights it references by id, e.g. a frozen
        pretrained LLM)."""
        return self.state_dict()

    # ------------------------------------------------------------------ inference
    def infer(self, images: torch.Tensor, decoding: Decoding) -> RawPrediction:
        """The system's own inference on image pairs ``[B, 2, 3, S, S]`` with checked options (``decoding``);
        called by :meth:`predict` under ``torch.no_grad``."""
        raise NotImplementedError(f"{type(self).__name__} does not implement infer")

    @torch.no_grad()
    def predict(
        self,
        images: torch.Tensor,
        *,
        beam_size: int | None = None,
        max_length: int | None = None,
        length_penalty: float | None = None,
        sampling: Sampling | None = None,
        attention_maps: bool = False,
    ) -> Prediction:
        """Image pairs ``[B, 2, 3, S, S]`` (preprocessed) → :class:`Prediction`; the one inference entry point.

        Options (:class:`Decoding`) are checked against :attr:`capabilities` first: one a system cannot honour is a
        one-line ModelError, never silently dropped. Call ``model.eval()`` first, as for any inference.
        """
        decoding = Decoding(beam_size, max_length, length_penalty, sampling, attention_maps)
        capabilities = self.capabilities
        decoding.check(capabilities, self.architecture)
        raw = self.infer(images, decoding)
        return normalise(raw, capabilities, int(images.shape[0]), self.vocab, self.architecture,
                         attention_maps=attention_maps)  # fmt: skip

    def check_decoding(self, decoding: Decoding) -> None:
        """One-line ModelError when this model cannot honour ``decoding`` (what :meth:`predict` checks first), so a
        caller can check its options before any work (the trainer checks ``train.val_*`` at start)."""
        decoding.check(self.capabilities, self.architecture)

    # ------------------------------------------------------------------ export
    def onnx_export(self, image_size: int, batch: int = 2) -> OnnxExport:
        """The system's ONNX graphs with example inputs of ``batch`` pairs of ``image_size`` px (``onnx``)."""
        raise ModelError(f"{self.architecture} provides no ONNX graphs (capabilities: "
                         f"{', '.join(self.capabilities.names()) or 'none'})")  # fmt: skip
