"""The contract between ``changecap pretrain`` and a foundation it pretrains, and the registry of targets.

A **target** (``clip``, ``sam``, ``qformer``, ``lm``) is a module of this package exposing ``TARGET``, a
:class:`PretrainTarget`: which data it reads, the dataclass of its ``model`` config section and a ``build``
function. ``build(config, inputs)`` returns a **pretraining module**, an ``nn.Module`` with

* ``forward(batch: dict) -> dict[str, Tensor]``: the named loss terms of one (per-process) batch, each a scalar
  mean over the batch; the loop sums them for the update and logs each. Under DDP a term that compares samples
  across the batch (a contrastive loss) gathers from every process itself (``changecap.models.parallel``).
* ``save_pretrained(out_dir: Path) -> None``: writes the directory the systems load where the real weights would
  go (``transformers`` weights, config and tokenizer). The loop adds ``pretrain_card.json``, ``config.yaml`` and
  ``metrics.jsonl`` beside them, and moves the folder into place only when everything is written.
* optionally ``evaluate(batches: Iterable[dict]) -> dict[str, float]``: figures on the held-out part of the train
  split (recall@k, perplexity, mIoU), written to the card and ``metrics.jsonl``; and ``parameter_groups()`` for
  ``optim.group_lr``, as the systems' models.

Batches hold tensors already on the module's device. Image targets (``inputs="images"``) get ``image``
``float [B, 3, S, S]`` (normalised), ``caption`` (one caption per image, drawn per epoch), ``captions`` (all of
them), ``name`` and, for targets that need maps, ``landcover`` ``long [B, S, S]`` (255: unlabelled); text targets
(``inputs="text"``) get ``text`` (one caption per item) or, with ``data.documents``, ``texts`` (every caption of
one image or pair per item), and ``name``.

Registry entries are ``"module:attribute"`` strings imported on first use, as the architecture registry's, so a
target whose module is not installed fails only when it is asked for.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from torch import nn

from changecap.errors import ConfigError, ModelError
from changecap.schema import from_dict

Inputs = Literal["images", "text"]

#: target name → "module:attribute" of its :class:`PretrainTarget`; one line per foundation.
TARGETS: dict[str, str] = {
    "clip": "changecap.models.foundations.clip:TARGET",
    "sam": "changecap.models.foundations.sam:TARGET",
    "qformer": "changecap.models.foundations.qformer:TARGET",
    "lm": "changecap.models.foundations.lm:TARGET",
}


@dataclass(frozen=True)
class PretrainInputs:
    """What a target may know about its training data when it builds its module (never validation or test data).

    ``texts`` are the training captions (to train a tokenizer on); ``image_size``, ``resize_mode`` (``resize``: a
    bicubic resize to the square; ``clip``: shorter side, then a centred crop), ``mean`` and ``std`` (0–1 scale)
    describe how the images of the batches were prepared; ``landcover_classes`` names the map classes (None without
    maps).
    """

    texts: Sequence[str]
    image_size: int
    resize_mode: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    landcover_classes: Sequence[str] | None
    seed: int


@runtime_checkable
class PretrainingModule(Protocol):
    """What the loop calls on a target's module (module docstring)."""

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]: ...

    def save_pretrained(self, out_dir: Path) -> None: ...


@dataclass(frozen=True)
class PretrainTarget:
    """One foundation ``changecap pretrain`` can build (module docstring).

    ``needs`` lists what every training image must have: ``captions`` and/or ``landcover``; the data are checked
    before anything is built. ``loads_as`` says in one line where the written directory goes in a system config.
    """

    name: str
    summary: str
    config_class: type
    build: Callable[[Any, PretrainInputs], nn.Module]
    inputs: Inputs = "images"
    needs: tuple[str, ...] = ("captions",)
    loads_as: str = ""

    def read_config(self, section: Any, prefix: str = "model") -> Any:
        """The ``model`` section as this target's config dataclass (ConfigErrors name ``model.<field>``)."""
        return from_dict(self.config_class, {} if section is None else section, prefix)


def target_names() -> list[str]:
    return list(TARGETS)


def get_target(name: str) -> PretrainTarget:
    """The registered target ``name``; a one-line error for an unknown name or a target not installed here."""
    ref = TARGETS.get(name)
    if ref is None:
        raise ConfigError("target", f"unknown pretraining target {name!r}; expected one of {', '.join(TARGETS)}")
    module_name, _, attr = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name is None or not module_name.startswith(e.name):
            raise  # a dependency of the module is missing: a real bug or install problem, keep the traceback
        raise ModelError(f"pretraining target {name!r} is not available in this installation ({module_name})") from None
    target = getattr(module, attr, None)
    if not isinstance(target, PretrainTarget):
        raise ModelError(f"pretraining target {name!r}: {ref} is not a PretrainTarget")
    return target

