"""The options every command that loads a ``ChangeCaptioner`` shares: ``--precision``, ``--compile`` and
``--threads`` (applied by ``cli.main``, :mod:`changecap.cli.threads`)."""

from __future__ import annotations

import argparse
from typing import Any

from changecap.cli.threads import add_threads_argument

# changecap.models.precision.INFERENCE_PRECISIONS, not imported: building the parser needs no torch
PRECISION_CHOICES = ("fp32", "bf16", "int8")


def add_predictor_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--precision",
        default="fp32",
        choices=PRECISION_CHOICES,
        help="fp32 (default); bf16: weights cast once, bf16 autocast, fast on GPUs and CPUs with AMX / AVX-512 BF16; "
        "int8: linear layers in int8 (dynamic), CPU only, fastest on CPUs with VNNI",
    )
    add_threads_argument(p)
    p.add_argument(
        "--compile",
        action="store_true",
        help="run the encoder through torch.compile (falls back to eager with a warning)",
    )


def predictor_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of ``ChangeCaptioner.from_pretrained`` / ``evaluate_model`` those options give."""
    return {"precision": args.precision, "compile": args.compile}
