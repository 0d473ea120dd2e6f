"""``changecap info``: versions, device, Java / METEOR availability."""

from __future__ import annotations

import argparse
import json
import platform


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="show versions, compute device and METEOR availability")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from changecap.version import __version__

    info: dict[str, object] = {
        "changecap": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "cpu_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
    import transformers

    from changecap.metrics.meteor import meteor_availability
    from changecap.models.registry import architecture_names

    info["transformers"] = transformers.__version__
    ok, reason = meteor_availability()
    info["meteor"] = "available" if ok else f"unavailable: {reason}"
    info["architectures"] = ", ".join(architecture_names())
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        width = max(len(k) for k in info)
        for k, v in info.items():
            print(f"{k:<{width}}  {v}")
    return 0
