"""The model zoo: one package per system, shared parts, the architecture registry, save/load.

Layout (the shape of ``transformers/models/<name>/``)::

    models/
      contract.py   the model contract: ChangeModel, its one entry point predict → Prediction, Capabilities
      registry.py   architecture name → config class, builder, objective, capabilities, card rows (lazy)
      io.py         save_model / load_model / load_model_bundle (self-describing directories, Hub ids)
      hub.py        local directory or Hugging Face Hub repo id → local directory
      preprocess.py PreprocessConfig (preprocess.json: how a model wants its images)
      summary.py    parameter counts per part, built on the meta device (``changecap summary``)
      parts/        shared building blocks: CLIP encoder, caption decoder, decoding, attention, positions
      onnx_graphs.py  the ONNX graphs of systems built on the Transformer caption decoder
      hisem/ semantic_cc/ change_detection/ dfm/   one package per system (HiSem and the plain baseline share one)

Typical use::

    from changecap.models import build_model, load_model, save_model
    from changecap.models.hisem import paper_config
    model = load_model("runs/hisem/best")                      # or build_model(config), then model.vocab = vocab
    out = model.predict(images)                                # images [B, 2, 3, 224, 224], CLIP-preprocessed
    out.texts, out.tokens, out.change_probability, out.mask   # None where the system lacks that output
"""

from __future__ import annotations

from changecap.models.contract import ChangeModel, Prediction
from changecap.models.io import load_model, load_model_bundle, save_model
from changecap.models.preprocess import PreprocessConfig
from changecap.models.registry import (
    Architecture,
    ArchitectureConfig,
    Capabilities,
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
    "Capabilities",
    "ChangeModel",
    "ModelConfig",
    "Prediction",
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
