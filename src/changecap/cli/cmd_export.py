"""``changecap export onnx --model DIR --out DIR``: the encoder and the decoder step (KV cache) as ONNX graphs."""

from __future__ import annotations

import argparse

from changecap.cli.threads import add_threads_argument


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a model (ONNX: encoder graph + decoder-step graph with KV cache)")
    p.add_argument("format", choices=["onnx"], help="export format")
    p.add_argument("--model", required=True, help="saved model directory or Hugging Face Hub repo id")
    p.add_argument("--out", required=True, help="output folder (captioned with `changecap caption --backend onnx`)")
    add_threads_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from changecap.data.files import check_output_dir
    from changecap.errors import ChangeCapError

    check_output_dir(args.out, "--out")
    try:
        import onnx  # noqa: F401 - torch.onnx.export writes through it
    except ImportError:
        raise ChangeCapError("ONNX export needs onnx: pip install 'changecap[onnx]'") from None
    from changecap.inference.onnx_export import export_onnx

    folder = export_onnx(args.model, args.out)
    print(f"wrote {folder} (encoder.onnx, decoder_step.onnx); caption with --backend onnx --model {folder}")
    return 0
