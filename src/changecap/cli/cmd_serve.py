"""``changecap serve --model M [--host 127.0.0.1 --port 8000]``: the local web page and JSON API."""

from __future__ import annotations

import argparse

from changecap.cli.predictor_args import add_predictor_arguments, predictor_options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="a local web page and JSON API for captioning pairs (extra 'serve')")
    p.add_argument("--model", required=True, help="saved model directory or Hugging Face Hub repo id")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-upload-mb", type=float, default=32.0, help="largest request body in MB (default 32)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 … (default: cuda when available)")
    add_predictor_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from changecap.errors import ChangeCapError

    try:
        import uvicorn
    except ImportError:
        raise ChangeCapError("changecap serve needs FastAPI and uvicorn: pip install 'changecap[serve]'") from None
    from changecap.inference import ChangeCaptioner
    from changecap.models.device import parse_device
    from changecap.serve import create_app

    if args.max_upload_mb <= 0:
        raise ChangeCapError(f"--max-upload-mb must be > 0, got {args.max_upload_mb}")
    if not 0 < args.port < 65536:
        raise ChangeCapError(f"--port must be in 1..65535, got {args.port}")
    # loaded once, before serving
    device = parse_device(args.device, "--device")
    captioner = ChangeCaptioner.from_pretrained(args.model, device=device, **predictor_options(args))
    app = create_app(captioner, str(args.model), max_upload_mb=args.max_upload_mb)
    print(f"changecap serve: http://{args.host}:{args.port}/  (model {args.model}; Ctrl-C stops)")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
