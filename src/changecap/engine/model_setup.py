"""Building the model of a run from its ``model`` section, and saving it, through the architecture registry.

The trainer never names a model class: ``default_model_builder`` reads the section with the architecture's config
class and calls its builder; ``default_model_saver`` writes the ``changecap.models.io`` directory layout. Both can
be replaced (``Trainer(model_builder=..., model_saver=...)``) by code that brings its own model.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from changecap.data.vocab import Vocabulary

# (model section, vocabulary, max_length) → (model, model config object handed back to the saver)
ModelBuilder = Callable[[dict[str, Any], Vocabulary, int], tuple[nn.Module, Any]]
# (model, model config, vocabulary, target folder, model card) → None
ModelSaver = Callable[[nn.Module, Any, Vocabulary, Path, dict[str, Any]], None]


def default_model_builder(section: dict[str, Any], vocab: Vocabulary, max_length: int) -> tuple[nn.Module, Any]:
    """The section completed from the data (the config class's ``with_data``), read strictly, built.

    HiSem-style configs get the decoder's ``vocab_size`` and ``max_length`` from the data when they leave them out;
    a value that contradicts the data is a ConfigError naming the field.
    """
    from changecap.models.registry import build_model, config_from_dict

    model_config = config_from_dict(with_data_sizes(section, vocab, max_length), prefix="model")
    model = build_model(model_config)
    return model, model.config


def with_data_sizes(section: dict[str, Any], vocab: Vocabulary | int, max_length: int) -> dict[str, Any]:
    """A copy of the model section completed from the data by its architecture's config class (``with_data``).

    ``vocab`` may be a vocabulary size alone (benchmarks), which stands for a vocabulary of that many entries.
    """
    from changecap.models.registry import ArchitectureConfig, get_architecture

    words = [f"w{i}" for i in range(vocab)] if isinstance(vocab, int) else list(vocab.id_to_word)
    spec = get_architecture(section.get("architecture"))
    # a config class that is not an ArchitectureConfig (registry.ModelConfig only) gets the default completion
    complete = getattr(spec.config_class, "with_data", None) or ArchitectureConfig.with_data
    return complete(section, words, max_length)


def default_model_saver(model: nn.Module, model_config: Any, vocab: Vocabulary, out_dir: Path, card: dict) -> None:
    from changecap.models.io import save_model

    save_model(model, model_config, vocab, out_dir, card=card)


def enable_frozen_feature_caches(model: nn.Module, gigabytes: float) -> list[Any]:
    """``train.frozen_feature_cache_gb``: a :class:`~changecap.models.parts.clip_encoder.FrozenPrefixCache` on every
    CLIP encoder of ``model`` that has frozen blocks (0: none, and an empty list). A ConfigError when there is none."""
    from changecap.errors import ConfigError
    from changecap.models.parts.clip_encoder import CLIPPatchEncoder

    if gigabytes <= 0:
        return []
    encoders = [m for m in model.modules() if isinstance(m, CLIPPatchEncoder) and m.frozen_blocks > 0]
    if not encoders:
        raise ConfigError(
            "train.frozen_feature_cache_gb",
            "the model has no CLIP encoder with frozen blocks to cache (model.encoder.trainable_layers trains all)",
        )
    return [m.enable_prefix_cache(int(gigabytes * 2**30)) for m in encoders]
