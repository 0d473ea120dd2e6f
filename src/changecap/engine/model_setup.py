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
from changecap.errors import ConfigError

# (model section, vocabulary, max_length) → (model, model config object handed back to the saver)
ModelBuilder = Callable[[dict[str, Any], Vocabulary, int], tuple[nn.Module, Any]]
# (model, model config, vocabulary, target folder, model card) → None
ModelSaver = Callable[[nn.Module, Any, Vocabulary, Path, dict[str, Any]], None]


def default_model_builder(section: dict[str, Any], vocab: Vocabulary, max_length: int) -> tuple[nn.Module, Any]:
    """``config_from_dict(model section)`` → ``build_model``.

    The decoder's ``vocab_size`` and ``max_length`` come from the data when the config leaves them out; a value
    that contradicts the data is a ConfigError naming the field.
    """
    from changecap.models.registry import build_model, config_from_dict

    model_config = config_from_dict(with_data_sizes(section, len(vocab), max_length), prefix="model")
    model = build_model(model_config)
    return model, model.config


def with_data_sizes(section: dict[str, Any], vocab_size: int, max_length: int) -> dict[str, Any]:
    """A copy of the model section whose ``decoder`` has the data's vocabulary size and caption length."""
    section = dict(section)
    decoder = section.get("decoder")
    if not isinstance(decoder, dict):
        return section  # the config class reports the missing / malformed decoder section
    decoder = dict(decoder)
    given = decoder.get("vocab_size")
    if given is not None and given != vocab_size:
        raise ConfigError("model.decoder.vocab_size", f"is {given} but the vocabulary has {vocab_size} entries")
    decoder["vocab_size"] = vocab_size
    given = decoder.get("max_length")
    if isinstance(given, int) and given < max_length:
        raise ConfigError("model.decoder.max_length", f"is {given}, shorter than the data's captions ({max_length})")
    decoder.setdefault("max_length", max_length)
    section["decoder"] = decoder
    return section


def default_model_saver(model: nn.Module, model_config: Any, vocab: Vocabulary, out_dir: Path, card: dict) -> None:
    from changecap.models.io import save_model

    save_model(model, model_config, vocab, out_dir, card=card)
