"""``changecap convert``: import published checkpoints into changecap model directories.

``changecap convert hisem-official CKPT OUT_DIR --vocab VOCAB.json [--encoder CLIP_ID_OR_DIR | --no-encoder]``
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert published checkpoints into changecap model directories")
    conv = p.add_subparsers(dest="format", metavar="FORMAT")
    p.set_defaults(func=lambda args: _dispatch(p, args))

    h = conv.add_parser(
        "hisem-official",
        help="official HiSem checkpoint (Man-Wang-star/HiSem train.py .pth)",
        description=(
            "Convert an official HiSem checkpoint (a torch.save'd dict with encoder_dict, encoder_trans_dict, "
            "decoder_dict) into a changecap model directory. Every dimension except the attention heads and the "
            "MoE routing constants is inferred from tensor shapes. The file is read with weights_only=True."
        ),
    )
    h.add_argument("ckpt", metavar="CKPT", help="official checkpoint (.pth)")
    h.add_argument("out_dir", metavar="OUT_DIR", help="changecap model directory to write")
    h.add_argument("--vocab", required=True, metavar="VOCAB.json", help="the checkpoint's vocab.json ({token: id})")
    enc = h.add_mutually_exclusive_group()
    enc.add_argument(
        "--encoder",
        metavar="CLIP_ID_OR_DIR",
        help="take the CLIP backbone from a transformers CLIP checkpoint instead of the official encoder_dict",
    )
    enc.add_argument(
        "--no-encoder",
        action="store_true",
        help="write a model without backbone weights (runs from backbone tokens: fusion, decoder, generate)",
    )
    h.add_argument("--heads", type=int, default=8, help="BDAM attention heads (not inferable; default 8)")
    h.add_argument("--decoder-heads", type=int, default=8, help="decoder attention heads (default 8)")
    h.add_argument("--n-group", type=int, default=4, help="MoE expert groups (default 4)")
    h.add_argument("--topk-group", type=int, default=2, help="MoE groups kept per token (default 2)")
    h.add_argument("--top-k", type=int, default=2, help="MoE experts per token (default 2)")
    h.add_argument(
        "--clip-heads", type=int, default=None, help="CLIP attention heads (default: OpenAI's rule width // 64)"
    )
    h.add_argument(
        "--keep-unused",
        action="store_true",
        help="keep the official never-read tensors (norm_add/norm_del, fc_alpha1..3, embedding_1D) instead of "
        "dropping them, so the parameter count equals the official one",
    )
    h.add_argument("--force", action="store_true", help="overwrite OUT_DIR if it already holds a model")


_RUNNERS = {"hisem-official": "run_hisem_official"}


def _dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    name = _RUNNERS.get(getattr(args, "format", None) or "")  # the sub-command's format, when one was given
    if name is None:
        parser.print_help()
        return 1
    return int(globals()[name](args))


def run_hisem_official(args: argparse.Namespace) -> int:
    from changecap.convert import convert_hisem_official

    encoder: str | None = "none" if args.no_encoder else args.encoder
    out = convert_hisem_official(
        args.ckpt,
        args.out_dir,
        args.vocab,
        encoder=encoder,
        heads=args.heads,
        decoder_heads=args.decoder_heads,
        n_group=args.n_group,
        topk_group=args.topk_group,
        top_k=args.top_k,
        clip_heads=args.clip_heads,
        keep_unused=args.keep_unused,
        overwrite=args.force,
    )
    print(f"wrote {out}")
    return 0
