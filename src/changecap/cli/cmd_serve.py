"""``changecap serve --model M [--host 127.0.0.1 --port 8000]``: the local web page and JSON API."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from changecap.cli.predictor_args import add_predictor_arguments, predictor_options

DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096  # changecap.serve.app.DEFAULT_MAX_IMAGE_PIXELS (not imported: FastAPI-free)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="a local web page and JSON API for captioning pairs (extra 'serve')")
    p.add_argument("--model", required=True, help="saved model directory or Hugging Face Hub repo id")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-upload-mb", type=float, default=32.0, help="largest request body in MB (default 32)")
    p.add_argument(
        "--max-image-pixels",
        type=int,
        default=DEFAULT_MAX_IMAGE_PIXELS,
        help=f"most pixels per uploaded image, read from its header before decoding (default {DEFAULT_MAX_IMAGE_PIXELS}"
        " = 4096×4096); larger images get 413",
    )
    p.add_argument(
        "--allowed-hosts",
        default="",
        metavar="NAME[,NAME…]",
        help="further host names the server answers to (its Host header); by default only localhost, loopback "
        "addresses and the --host address; '*' allows any",
    )
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 … (default: cuda when available)")
    add_predictor_arguments(p)
    p.set_defaults(func=run)


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's logging with the server's own logger (``changecap.serve``) printed the same way."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["changecap.serve"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


def run(args: argparse.Namespace) -> int:
    from changecap.errors import ChangeCapError

    try:
        import fastapi_offline  # noqa: F401
        import uvicorn
    except ImportError:
        raise ChangeCapError(
            "changecap serve needs FastAPI, uvicorn and fastapi-offline: pip install 'changecap[serve]'"
        ) from None
    from changecap.inference import ChangeCaptioner
    from changecap.models.device import parse_device
    from changecap.serve import create_app
    from changecap.serve.hosts import is_loopback

    if args.max_upload_mb <= 0:
        raise ChangeCapError(f"--max-upload-mb must be > 0, got {args.max_upload_mb}")
    if args.max_image_pixels <= 0:
        raise ChangeCapError(f"--max-image-pixels must be > 0, got {args.max_image_pixels}")
    if not 0 < args.port < 65536:
        raise ChangeCapError(f"--port must be in 1..65535, got {args.port}")
    allowed = tuple(n.strip() for n in args.allowed_hosts.split(",") if n.strip())
    if not is_loopback(args.host):
        print(f"warning: --host {args.host} makes this unauthenticated API reachable from the network: anyone who "
              "can reach this machine can use it; bind 127.0.0.1 (the default) unless that is intended",
              file=sys.stderr)  # fmt: skip
    # loaded once, before serving
    device = parse_device(args.device, "--device")
    captioner = ChangeCaptioner.from_pretrained(args.model, device=device, **predictor_options(args))
    app = create_app(captioner, str(args.model), max_upload_mb=args.max_upload_mb,
                     max_image_pixels=args.max_image_pixels, host=args.host, allowed_hosts=allowed)  # fmt: skip
    print(f"changecap serve: http://{args.host}:{args.port}/  (model {args.model}; Ctrl-C stops)")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", log_config=uvicorn_log_config())
    return 0
