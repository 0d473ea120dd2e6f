"""The options every command that loads a ``ChangeCaptioner`` shares: ``--precision`` and ``--compile``."""

from __future__ import annotations

import argparse
from typing import Any


def add_predictor_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--precision",
        default="fp32",
        choices=("fp32", "bf16"),
        help="fp32 (default) or bf16: weights cast once, bf16 autocast; fast on GPUs and CPUs with AMX / AVX-512 BF16",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="run the encoder through torch.compile (falls back to eager with a warning)",
    )


def predictor_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of ``ChangeCaptioner.from_pretrained`` / ``evaluate_model`` those options give."""
    return {"precision": args.precision, "compile": args.compile}
