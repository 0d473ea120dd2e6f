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
"""

from __future__ import annotations

import contextlib
from collections import Counter
from typing import TypeVar

import torch
from torch import nn

M = TypeVar("M", bound=nn.Module)

# precisions by name (config ``train.precision``, ``--precision``) → autocast dtype (None: full precision)
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16}


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
