"""bf16 inference with the weights cast once, not on every call.

Under ``torch.autocast(dtype=bfloat16)`` every linear and convolution casts its fp32 weight (and bias) to bf16 on
each call: once per batch for the encoder, once per caption for the decoder's weights (autocast's cache lives as
long as one ``with`` block), hundreds of megabytes of conversions for the paper models. Casting those weights
once, ahead of time, removes that work and halves their memory, and because fp32 → bf16 rounding is
deterministic it gives *bit-identical* outputs to autocast: autocast finds bf16 weights and has nothing to cast.

Only the weights autocast would cast are touched: those of ``nn.Linear`` and ``nn.Conv*`` modules, only when the
module owns them (a weight tied to an embedding table stays fp32, since the embedding lookup is not an autocast op
and would change), and not in layers marked with :func:`keep_fp32` (read in fp32 on purpose). Norms, embeddings,
position tables and learned scales stay fp32, exactly as autocast leaves them. The model must then always run under
bf16 autocast (inputs stay fp32; autocast casts them).

Vocabulary projections are :class:`Fp32Linear`: they compute next-token logits in fp32 even under bf16 autocast
(training and inference). Greedy decoding takes the argmax of those logits, and bf16 rounding in that one product
flipped near-tied choices: on a trained DFM (459 SynthCC test pairs) bf16 everywhere kept 98.0 % of the fp32
token positions, bf16 everywhere but the vocabulary projection 99.7 %. The projection is a small share of a
model's FLOPs (under 1 % of paper HiSem's captioning).

int8 inference (:func:`quantize_linear_layers`, ``--precision int8``, CPU only) replaces the model's linear layers
by :class:`Int8Linear` once, at load: weights int8 per output channel, activations quantised per row at run time
(dynamic), products in int8 with int32 sums (``torch._int_mm``, oneDNN's VNNI / AVX2 kernels). The rest of the model
(attention products, norms, convolutions, embeddings) runs in fp32, and the layers that decide rather than transform
stay float: vocabulary projections, routers and gates marked with :func:`keep_fp32`, and the narrow scorers and
gates (fewer than :data:`INT8_MIN_OUT_FEATURES` outputs, where int8 would save nothing anyway).
"""

from __future__ import annotations

import contextlib
import functools
from collections import Counter
from typing import TypeVar

import torch
from torch import nn

M = TypeVar("M", bound=nn.Module)

# precisions by name (config ``train.precision``, ``--precision``) → autocast dtype (None: full precision)
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16}
# inference only (``--precision``): the training precisions and int8 (linear layers quantised, the rest fp32)
INFERENCE_PRECISIONS: tuple[str, ...] = (*PRECISIONS, "int8")


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype an inference precision runs under: bf16 for ``bf16``, none for ``fp32`` and ``int8``
    (int8 layers take fp32 inputs; everything else stays fp32)."""
    return PRECISIONS.get(precision)


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``dtype`` on ``device``; a no-op context for full precision (``dtype=None``)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


# modules whose forward is one autocast-to-lower-precision op on their own weight and bias
_CAST_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d)


_KEEP_FP32 = "_changecap_keeps_fp32"


def keep_fp32(module: M) -> M:
    """Mark a layer whose weight the model reads in fp32 on purpose (e.g. a router computed with autocast off, so
    that routing never flips between precisions): :func:`cast_matmul_weights` leaves it alone."""
    setattr(module, _KEEP_FP32, True)
    return module


class Fp32Linear(nn.Linear):
    """``nn.Linear`` that computes in fp32 also under lower-precision autocast (input upcast, autocast off inside);
    its weights stay fp32 (:func:`cast_matmul_weights` skips it). For vocabulary projections (module docstring)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        keep_fp32(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_autocast_enabled(x.device.type):  # fp32 already: skip the context's per-call cost
            return super().forward(x)
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.float())


def logits_in_fp32(module: nn.Module | None) -> bool:
    """Turn an existing plain ``nn.Linear`` (e.g. a Hugging Face causal LM's ``lm_head``) into an
    :class:`Fp32Linear` in place: same parameters, same ``state_dict`` keys, a copy-safe class change. Returns
    False, changing nothing, for any other module (an adapter-wrapped head, say)."""
    if type(module) is not nn.Linear:
        return False
    module.__class__ = Fp32Linear
    keep_fp32(module)
    return True


def cast_matmul_weights(model: nn.Module, dtype: torch.dtype = torch.bfloat16) -> int:
    """Cast, in place and once, the weights and biases of the model's linear and convolution layers to ``dtype``
    (for inference under autocast of that dtype). Returns the number of parameters cast. Shared parameters are
    left alone. The cast parameters no longer require gradients: the model is for inference from here on."""
    uses = Counter(id(p) for _, p in model.named_parameters(remove_duplicate=False))
    cast = 0
    for module in model.modules():
        if not isinstance(module, _CAST_MODULES) or getattr(module, _KEEP_FP32, False):
            continue
        for name in ("weight", "bias"):
            param = getattr(module, name, None)
            if not isinstance(param, nn.Parameter) or uses[id(param)] > 1 or not param.is_floating_point():
                continue
            setattr(module, name, nn.Parameter(param.detach().to(dtype), requires_grad=False))
            cast += param.numel()
    return cast


# linear layers with fewer outputs stay float under int8: scorers and per-token gates (one to a few outputs) decide
# what passes, and a K-long dot product per output gains nothing from int8
INT8_MIN_OUT_FEATURES = 16
# modules that read their linear children's weights themselves (torch's fused inference path) instead of calling them
_READS_CHILD_WEIGHTS = (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer, nn.MultiheadAttention)


@functools.cache
def int8_weight_levels() -> int:
    """The largest int8 weight magnitude whose products this CPU sums exactly: 127, or 63 where the int8 kernel adds
    pairs of unsigned × signed byte products into 16 bits and saturates (oneDNN on CPUs without VNNI: AVX2-only
    ones, or ``ONEDNN_MAX_CPU_ISA=AVX2``). Probed once with extreme values; with weights in ±63 no pair can
    saturate, at half the weight resolution."""
    rows = torch.full((32, 256), 127, dtype=torch.int8)  # [M, K]
    rows[1::2] = -127
    weights = torch.full((256, 64), 127, dtype=torch.int8)  # [K, N]
    return 127 if torch.equal(torch._int_mm(rows, weights), rows.int() @ weights.int()) else 63


def int8_unavailable(device: torch.device | str) -> str | None:
    """Why int8 inference cannot run on ``device`` with this PyTorch build (one line), or None when it can."""
    device = torch.device(device)
    if device.type != "cpu":
        return f"--precision int8 runs on the CPU only (PyTorch's int8 kernels), not on {device}; use fp32 or bf16"
    if not torch.backends.mkldnn.is_available():
        return "--precision int8 needs PyTorch's oneDNN int8 kernels, which this PyTorch build lacks; use fp32 or bf16"
    return None


class Int8Linear(nn.Module):
    """An inference-only ``nn.Linear`` in int8: weights quantised once (symmetric, one scale per output channel),
    inputs quantised on every call (symmetric, one scale per row: a token's result never depends on the other rows
    of the batch), an int8 product with int32 sums (``torch._int_mm``), then rescaled to fp32 and the fp32 bias
    added. Takes and returns float tensors of any leading shape. Weights use ±:func:`int8_weight_levels` (127, or 63
    on CPUs whose int8 kernel would otherwise saturate)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach().float()  # [N, K]
        levels = int8_weight_levels()
        scale = weight.abs().amax(dim=1).clamp_min(torch.finfo(torch.float32).tiny) / levels  # [N]
        self.register_buffer("weight_int8", torch.round(weight / scale[:, None]).to(torch.int8))  # [N, K]
        self.register_buffer("weight_scale", scale)
        bias = None if linear.bias is None else linear.bias.detach().float()
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        rows = x.reshape(-1, self.in_features).float()  # [M, K]
        if rows.shape[0] == 0:
            return x.new_zeros(*lead, self.out_features, dtype=torch.float32)
        scale = rows.abs().amax(dim=1, keepdim=True).clamp_min_(torch.finfo(torch.float32).tiny).div_(127.0)  # [M, 1]
        q = rows.div(scale).round_().to(torch.int8)  # [M, K], in [-127, 127]
        out = torch._int_mm(q, self.weight_int8.t()).float()  # [M, N]: exact int32 sums
        out.mul_(scale).mul_(self.weight_scale)
        if self.bias is not None:
            out.add_(self.bias)
        return out.view(*lead, self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def quantize_linear_layers(model: nn.Module) -> int:
    """Replace, in place and once, the model's ``nn.Linear`` layers by :class:`Int8Linear` (for CPU inference
    without autocast). Left float: layers marked with :func:`keep_fp32` (vocabulary projections, routers, gates),
    layers with fewer than :data:`INT8_MIN_OUT_FEATURES` outputs, subclasses of ``nn.Linear`` (their forward is
    their own), layers whose weight is shared with another module (a tied embedding) and the layers of torch's own
    ``nn.TransformerEncoderLayer`` / ``nn.MultiheadAttention`` (whose fused path reads the weights directly).
    Returns the number of layers replaced."""
    uses = Counter(id(p) for _, p in model.named_parameters(remove_duplicate=False))
    targets = [
        (parent, name, child)
        for parent in model.modules()
        if not isinstance(parent, _READS_CHILD_WEIGHTS)
        for name, child in parent.named_children()
        if type(child) is nn.Linear
        and not getattr(child, _KEEP_FP32, False)
        and child.out_features >= INT8_MIN_OUT_FEATURES
        and uses[id(child.weight)] == 1
    ]
    for parent, name, child in targets:
        setattr(parent, name, Int8Linear(child).to(child.weight.device))
    return len(targets)
