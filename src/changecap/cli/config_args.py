"""``--set KEY=VALUE``: the config overrides of every command that reads a YAML config (``train``, ``pretrain``) and
of the benchmarks that train from one."""

from __future__ import annotations

import argparse

OVERRIDE_HELP = "override a config value, e.g. --set train.epochs=3 (value parsed as YAML; repeatable)"


def add_overrides_argument(p: argparse.ArgumentParser, help_text: str = OVERRIDE_HELP) -> None:
    """``--set KEY=VALUE`` (repeatable) into ``args.overrides``."""
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help_text)
