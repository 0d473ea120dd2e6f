"""The model zoo: one package per system, shared parts, the architecture registry, save/load.

Layout (the shape of ``transformers/models/<name>/``)::

    models/
      registry.py   architecture name → config class, builder, objective, card rows (lazy); build_model
      io.py         save_model / load_model / load_model_bundle (self-describing directories, Hub ids)
      hub.py        local directory or Hugging Face Hub repo id → local directory
      preprocess.py PreprocessConfig (preprocess.json: how a model wants its images)
      summary.py    parameter counts per part, built on the meta device (``changecap summary``)
      parts/        shared building blocks: CLIP encoder, caption decoder, decoding, attention, positions
      hisem/        HiSem and the plain baseline

Typical use::

    from changecap.models import build_model, load_model, save_model
    from changecap.models.hisem import paper_config
    model = build_model(paper_config(vocab_size=len(vocab)))
    seqs, change_prob = model.eval().caption(images)          # images [B, 2, 3, 224, 224], CLIP-preprocessed
"""

from __future__ import annotations

from changecap.models.io import load_model, load_model_bundle, save_model
from changecap.models.preprocess import PreprocessConfig
from changecap.models.registry import (
    Architecture,
    ArchitectureConfig,
    ModelConfig,
    architecture_names,
    build_model,
    config_from_dict,
    get_architecture,
    register_architecture,
    unregister_architecture,
)

__all__ = [
    "Architecture",
    "ArchitectureConfig",
    "ModelConfig",
    "PreprocessConfig",
    "architecture_names",
    "build_model",
    "config_from_dict",
    "get_architecture",
    "load_model",
    "load_model_bundle",
    "register_architecture",
    "save_model",
    "unregister_architecture",
]
