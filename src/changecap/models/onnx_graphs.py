"""ONNX graphs of a system whose captions come from changecap's Transformer caption decoder (HiSem, plain, DFM).

A system's ``onnx_export`` hook (the ``onnx`` capability) hands :func:`step_decoder_export` its decoder and a
function from image pairs to the decoder memory and change probability; the graphs are thin wrappers around the
PyTorch modules, nothing re-implemented:

* ``encoder.onnx`` — ``images`` [B, 2, 3, S, S] → ``change_probability`` [B] (NaN for a system without one) and the
  decoder's cross-attention ``cross_keys`` / ``cross_values`` of the memory, [layers, B, H, L, Dh] each (computed once
  per pair, as :meth:`TransformerCaptionDecoder.cross_keys_values` does for PyTorch generation);
* ``decoder_step.onnx`` — the decoder's own KV-cache step (:meth:`TransformerCaptionDecoder.step`): ``tokens`` [N],
  ``position`` [1], ``self_keys`` / ``self_values`` [layers, N, H, t, Dh], ``key_valid`` [N, t], ``cross_keys`` /
  ``cross_values`` → ``logits`` [N, V], the caches grown to t + 1 and ``key_valid`` [N, t + 1].

Batch, cache length and memory length are dynamic axes. The runtime that reads them, ``STEP_DECODER_RUNTIME``
(``changecap.inference.onnx_export.OnnxCaptioner``), decodes greedily as ``parts.decoding.greedy_search`` does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from changecap.data.vocab import START_ID
from changecap.models.contract import OnnxExport, OnnxGraph
from changecap.models.parts.caption_decoder import DecoderCache, TransformerCaptionDecoder

ENCODER_FILE, STEP_FILE = "encoder.onnx", "decoder_step.onnx"
STEP_DECODER_RUNTIME = "step-decoder"  # onnx_config.json "runtime": an encoder graph and a decoder-step graph

#: image pairs [B, 2, 3, S, S] → (decoder memory [B, L, D], change probability [B] or None)
MemoryFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]


class EncoderGraph(nn.Module):
    """Image pairs → change probability (NaN without one) and the decoder's cross-attention keys and values."""

    def __init__(self, model: nn.Module, memory_fn: MemoryFn, decoder: TransformerCaptionDecoder) -> None:
        super().__init__()
        self.model = model  # holds every parameter the memory function reads
        self.memory_fn = memory_fn
        self.decoder = decoder

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        memory, prob = self.memory_fn(images)
        if prob is None:
            prob = torch.full((images.shape[0],), float("nan"), device=images.device)  # [B]
        keys, values = self.decoder.cross_keys_values(memory)
        return prob, torch.stack(keys), torch.stack(values)  # [B], 2 × [layers, B, H, L, Dh]


class DecoderStepGraph(nn.Module):
    """The decoder's KV-cache step with the cache as stacked tensors (one hypothesis per row)."""

    def __init__(self, decoder: TransformerCaptionDecoder) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(
        self,
        tokens: torch.Tensor,
        position: torch.Tensor,
        self_keys: torch.Tensor,
        self_values: torch.Tensor,
        key_valid: torch.Tensor,
        cross_keys: torch.Tensor,
        cross_values: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        cache = DecoderCache(group=1, self_keys=list(self_keys.unbind(0)), self_values=list(self_values.unbind(0)),
                             cross_keys=list(cross_keys.unbind(0)), cross_values=list(cross_values.unbind(0)),
                             key_valid=key_valid)  # fmt: skip
        logits = self.decoder.step(tokens, cache, position)  # [N, V]
        return logits, torch.stack(cache.self_keys), torch.stack(cache.self_values), cache.key_valid


def step_decoder_export(
    model: nn.Module,
    memory_fn: MemoryFn,
    decoder: TransformerCaptionDecoder,
    image_size: int,
    batch: int,
    meta: dict[str, Any],
) -> OnnxExport:
    """The two graphs of a system built on :class:`TransformerCaptionDecoder` (module docstring), with example
    inputs of ``batch`` random pairs of ``image_size`` px; ``meta`` (the architecture, its capabilities) is
    completed with what the runtime needs."""
    encoder, step = EncoderGraph(model, memory_fn, decoder).eval(), DecoderStepGraph(decoder).eval()
    cfg = decoder.config
    layers, heads, dh = len(decoder.layers), cfg.heads, cfg.dim // cfg.heads
    images = torch.randn(batch, 2, 3, image_size, image_size)
    with torch.no_grad():
        _, cross_k, cross_v = encoder(images)
    step_inputs = (
        torch.full((batch,), START_ID, dtype=torch.long),
        torch.tensor([0]),
        torch.zeros(layers, batch, heads, 0, dh),
        torch.zeros(layers, batch, heads, 0, dh),
        torch.zeros(batch, 0, dtype=torch.bool),
        cross_k,
        cross_v,
    )
    cache_axes = {1: "batch", 3: "length"}
    memory_axes = {1: "batch", 3: "memory"}
    graphs = {
        ENCODER_FILE: OnnxGraph(
            encoder, (images,), ["images"], ["change_probability", "cross_keys", "cross_values"],
            {"images": {0: "batch"}, "change_probability": {0: "batch"}, "cross_keys": memory_axes,
             "cross_values": memory_axes},
        ),
        STEP_FILE: OnnxGraph(
            step, step_inputs,
            ["tokens", "position", "self_keys", "self_values", "key_valid", "cross_keys", "cross_values"],
            ["logits", "new_self_keys", "new_self_values", "new_key_valid"],
            {"tokens": {0: "batch"}, "self_keys": cache_axes, "self_values": cache_axes,
             "key_valid": {0: "batch", 1: "length"}, "cross_keys": memory_axes, "cross_values": memory_axes,
             "logits": {0: "batch"}, "new_self_keys": cache_axes, "new_self_values": cache_axes,
             "new_key_valid": {0: "batch", 1: "length"}},
        ),
    }  # fmt: skip
    meta = {**meta, "runtime": STEP_DECODER_RUNTIME, "max_length": int(decoder.max_length), "layers": layers,
            "heads": heads, "head_dim": dh}  # fmt: skip
    return OnnxExport(graphs, meta)
