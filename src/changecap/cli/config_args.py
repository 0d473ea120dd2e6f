"""``--set KEY=VALUE``: the config overrides of every command that reads a YAML config (``train``, ``pretrain``)."""

from __future__ import annotations

import argparse


def add_overrides_argument(p: argparse.ArgumentParser) -> None:
    """``--set KEY=VALUE`` (repeatable) into ``args.overrides``."""
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.epochs=3 (value parsed as YAML; repeatable)",
    )
