"""``changecap summary``: parameter counts per model part, from a training config or a saved model directory.

Nothing is trained, loaded or downloaded: the model is built on the meta device (``changecap.models.summary``), so
the paper model or one with a 7B language model is summarised in seconds, offline::

    changecap summary configs/hisem_levircc.yaml            # aligned table: part, total, trainable
    changecap summary runs/hisem_levircc/best --json        # {"architecture", "parts", "total", "trainable"}
    changecap summary configs/plain_synthcc_cpu.yaml --vocab-size 120

A training config usually leaves the decoder's vocabulary size and caption length to the data; without reading
the dataset they come from ``--vocab-size``, ``data.vocab.path`` (an existing ``vocab.json``) or ``data.max_length``,
else 501 / 41 are assumed and a one-line note on stderr says so.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

#: what is assumed when neither the config nor the command line gives them (the LEVIR-CC vocabulary and captions)
DEFAULT_VOCAB_SIZE = 501
DEFAULT_MAX_LENGTH = 41


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "summary",
        help="parameter counts per model part, without loading any weights",
        description="Parameter counts (total, trainable) per model part, from a training config YAML or a saved "
        "model directory. The model is built on the meta device: no weights are allocated or downloaded.",
    )
    p.add_argument("path", metavar="CONFIG.yaml|MODEL_DIR", help="a training config or a saved model directory")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--vocab-size",
        type=int,
        default=None,
        metavar="N",
        help="decoder vocabulary size for a training config that leaves it to the data "
        f"(default: the size of data.vocab.path, else {DEFAULT_VOCAB_SIZE})",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from changecap.models.summary import summarize

    notes: list[str] = []
    summary = summarize(model_config_for(Path(args.path), args.vocab_size, notes))
    for note in notes:  # only once the summary exists, so an error stays the one line on stderr
        print(f"note: {note}", file=sys.stderr)
    print(json.dumps(summary.to_dict(), indent=2) if args.json else summary.format_table())
    return 0


def model_config_for(path: Path, vocab_size: int | None = None, notes: list[str] | None = None) -> Any:
    """The model config object of a saved model directory or of a training config's ``model`` section.

    What had to be assumed for a training config (the decoder's vocabulary size, caption length) is appended to
    ``notes``.
    """
    from changecap.errors import ConfigError, ModelError

    if path.is_dir():
        from changecap.models.io import read_model_config

        if vocab_size is not None:
            raise ModelError(f"{path}: --vocab-size applies to a training config; a saved model's config.json fixes it")
        return read_model_config(path)
    if not path.exists():
        raise ConfigError("<file>", "not found (expected a training config YAML or a saved model directory)", path=path)
    return _train_model_config(path, vocab_size, [] if notes is None else notes)


def _train_model_config(path: Path, vocab_size: int | None, notes: list[str]) -> Any:
    """The ``model`` section of a training config, its decoder sizes filled in without reading the dataset."""
    from changecap.data.vocab import Vocabulary
    from changecap.engine.config import load_config
    from changecap.engine.model_setup import with_data_sizes
    from changecap.errors import ConfigError
    from changecap.models.registry import config_from_dict
    from changecap.schema import with_path

    cfg = load_config(path, check_model=False)
    decoder = cfg.model.get("decoder")
    decoder = decoder if isinstance(decoder, dict) else {}
    vocab_path = cfg.data.vocab.path
    if vocab_size is None and decoder.get("vocab_size") is not None:
        vocab_size = decoder["vocab_size"]  # the config's own value (checked by the config class below)
    elif vocab_size is None and vocab_path and Path(vocab_path).is_file():
        vocab_size = len(Vocabulary.load(vocab_path))
    elif vocab_size is None:
        vocab_size = DEFAULT_VOCAB_SIZE
        why = (
            f"data.vocab.path '{vocab_path}' does not exist" if vocab_path else "the vocabulary is built from the data"
        )
        notes.append(f"the vocabulary size is not set and {why}; assuming {vocab_size} (pass --vocab-size N)")
    if isinstance(cfg.data.max_length, int):
        max_length = cfg.data.max_length
    elif isinstance(decoder.get("max_length"), int):
        max_length = decoder["max_length"]
    else:
        max_length = DEFAULT_MAX_LENGTH
        notes.append(
            f"the caption length is not set and data.max_length is {cfg.data.max_length!r}; assuming {max_length}"
        )
    try:
        return config_from_dict(with_data_sizes(cfg.model, vocab_size, max_length), prefix="model")
    except ConfigError as e:
        raise with_path(e, path) from None
