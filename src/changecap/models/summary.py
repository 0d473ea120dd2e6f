"""Parameter counts per model part, from a model config alone (``changecap summary``).

The model is built on PyTorch's ``meta`` device: every parameter has its shape and ``requires_grad`` but no
storage, so nothing is allocated, initialised or downloaded, and even a configuration with a 7B language model is
summarised in seconds and offline. What a part is comes from the architecture registry: an architecture's
``summary_parts(model)`` when it has one (e.g. ``encoder.lora`` for the LoRA parameters of a wrapped encoder), else
the model's children and their children (dotted names, those without parameters left out); the summary also lists
the capabilities the architecture declares (``models/contract.py``).

Usage::

    from changecap.models.hisem import paper_config
    from changecap.models.summary import summarize

    s = summarize(paper_config(501, pretrained=None))
    s.parts["fusion"].total        # 81,243,976
    print(s.format_table())        # part / total / trainable, then the model's totals
    s.to_dict()                    # {"architecture": "hisem", "parts": {...}, "total": ..., "trainable": ...,
                                   #  "capabilities": ["captions", "change_probability", ...]}

This module belongs to the models layer: it reads no training config (the CLI turns one into a model config).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from changecap.errors import ChangeCapError, ConfigError, ModelError
from changecap.models.parts.clip_encoder import ARCHITECTURE_FIELDS
from changecap.models.registry import architecture_of, build_model, get_architecture


@dataclass(frozen=True)
class PartCount:
    """Parameters of one part: all of them, and those that receive gradients (``requires_grad``)."""

    total: int
    trainable: int


@dataclass(frozen=True)
class ModelSummary:
    """Per-part and whole-model parameter counts; a shared (tied) parameter counts once per part and in the totals."""

    architecture: str
    parts: dict[str, PartCount]
    total: int
    trainable: int
    capabilities: list[str] = field(default_factory=list)  # what the architecture declares (registry)

    def to_dict(self) -> dict[str, Any]:
        """``{"architecture", "parts": {name: {"total", "trainable"}}, "total", "trainable", "capabilities"}`` (a
        stable JSON shape)."""
        return {
            "architecture": self.architecture,
            "parts": {name: {"total": c.total, "trainable": c.trainable} for name, c in self.parts.items()},
            "total": self.total,
            "trainable": self.trainable,
            "capabilities": list(self.capabilities),
        }

    def format_table(self) -> str:
        """An aligned text table: one row per part, then the model's totals (thousands separators), then the
        declared capabilities."""
        rows = [(name, f"{c.total:,}", f"{c.trainable:,}") for name, c in self.parts.items()]
        footer = ("total", f"{self.total:,}", f"{self.trainable:,}")
        header = ("part", "total", "trainable")
        w0, w1, w2 = (max(len(r[i]) for r in [header, *rows, footer]) for i in range(3))

        def line(r: tuple[str, str, str]) -> str:
            return f"{r[0]:<{w0}}  {r[1]:>{w1}}  {r[2]:>{w2}}"

        rule = "-" * (w0 + w1 + w2 + 4)
        can = f"capabilities: {', '.join(self.capabilities) or 'none'}"
        return "\n".join(
            [f"architecture: {self.architecture}", line(header), rule, *map(line, rows), rule, line(footer), can]
        )


def count_parameters(params: Iterable[nn.Parameter]) -> PartCount:
    """Total and trainable element counts of ``params``, each distinct tensor counted once."""
    unique = {id(p): p for p in params}.values()
    return PartCount(
        total=sum(p.numel() for p in unique),
        trainable=sum(p.numel() for p in unique if p.requires_grad),
    )


def default_summary_parts(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """The model's children and their children (``encoder``, ``encoder.vision``, …), skipping parameter-less ones."""
    parts: dict[str, list[nn.Parameter]] = {}
    for name, child in model.named_children():
        params = list(child.parameters())
        if not params:
            continue
        parts[name] = params
        for sub, grandchild in child.named_children():
            sub_params = list(grandchild.parameters())
            if sub_params:
                parts[f"{name}.{sub}"] = sub_params
    return parts


def summarize_model(model: nn.Module, architecture: str) -> ModelSummary:
    """Count an already built model's parameters per part (the architecture's ``summary_parts`` or the default)."""
    spec = get_architecture(architecture)
    parts: Mapping[str, Iterable[nn.Parameter]] = (
        spec.summary_parts(model) if spec.summary_parts is not None else default_summary_parts(model)
    )
    whole = count_parameters(model.parameters())
    return ModelSummary(
        architecture=architecture,
        parts={name: count_parameters(params) for name, params in parts.items()},
        total=whole.total,
        trainable=whole.trainable,
        capabilities=spec.capabilities.names(),
    )


def summarize(config: Any) -> ModelSummary:
    """Build the model ``config`` describes on the meta device (no weights anywhere) and count its parameters.

    An encoder named only by its pretrained weights (``encoder.pretrained`` set, ``encoder.config`` null) has no
    architecture to build offline unless it is a local directory or a Hugging Face cache entry whose
    ``config.json`` can be read; otherwise a ConfigError names ``model.encoder.config`` (the shipped paper configs
    give the fields).
    """
    spec = architecture_of(config)
    config = _with_offline_encoder_architecture(config)
    try:
        with torch.device("meta"):
            model = build_model(config, load_pretrained=False, init_weights=True)
    except ChangeCapError:
        raise
    except Exception as e:  # a config transformers or torch rejects: still one line
        reason = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ModelError(f"cannot build the {spec.name!r} model ({type(e).__name__}: {reason})") from None
    return summarize_model(model, spec.name)


def _with_offline_encoder_architecture(config: Any) -> Any:
    """``config`` itself, or a copy whose ``encoder.config`` holds the architecture of ``encoder.pretrained``."""
    encoder = getattr(config, "encoder", None)
    pretrained = getattr(encoder, "pretrained", None)
    if pretrained is None or not hasattr(encoder, "config") or encoder.config is not None:
        return config
    fields = _local_encoder_fields(str(pretrained))
    if fields is None:
        raise ConfigError(
            "model.encoder.config",
            f"is null and the architecture of '{pretrained}' is not known offline; give its CLIPVisionConfig fields "
            "(hidden_size, image_size, patch_size, ...) to summarise without the weights",
        )
    config = copy.deepcopy(config)
    config.encoder.config = dict(fields)
    return config


def _local_encoder_fields(name: str) -> dict[str, Any] | None:
    """The vision architecture in a local CLIP directory's or the Hugging Face cache's ``config.json`` (never the
    network, never the weights); None when there is none."""
    from transformers import CLIPVisionConfig

    local = Path(name).expanduser()
    source = str(local) if (local / "config.json").is_file() else name
    try:
        full = CLIPVisionConfig.from_pretrained(source, local_files_only=True).to_dict()
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return {k: full[k] for k in ARCHITECTURE_FIELDS if k in full}
