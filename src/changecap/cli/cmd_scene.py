"""``changecap scene BEFORE.tif AFTER.tif --model M --out DIR``: caption two whole georeferenced scenes tile by tile
(``changecap.inference.scene``); resumable, shardable with ``torchrun``."""

from __future__ import annotations

import argparse

from changecap.cli.predictor_args import add_predictor_arguments, predictor_options


def _bands(text: str) -> list[int]:
    try:
        bands = [int(b) for b in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected band numbers like 3,2,1, got {text!r}") from None
    return bands


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("scene", help="caption two whole GeoTIFF scenes tile by tile (GeoJSON, mask GeoTIFF, report)")
    p.add_argument("before", help="before scene (a raster rasterio reads: GeoTIFF, …)")
    p.add_argument("after", help="after scene")
    p.add_argument("--model", required=True, help="saved model directory or Hugging Face Hub repo id")
    p.add_argument("--out", required=True, help="output folder (a folder with an interrupted run resumes it)")
    p.add_argument("--tile", type=int, help="tile side in source pixels (default: the model's training pair size)")
    p.add_argument("--overlap", type=int, default=0, help="pixels shared by neighbouring tiles (default 0)")
    p.add_argument("--bands", type=_bands, help="three 1-based bands read as R,G,B (e.g. 3,2,1; default 1,2,3)")
    p.add_argument("--align", action="store_true", help="resample AFTER onto BEFORE's grid (other CRS/resolution)")
    p.add_argument("--batch-size", type=int, default=16, help="tiles per forward pass (default 16)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 … (default: cuda when available)")
    add_predictor_arguments(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from changecap.engine.distributed import barrier, cleanup_distributed, init_distributed
    from changecap.inference import ChangeCaptioner
    from changecap.inference.scene import SceneSettings, caption_tiles, record_settings, write_outputs
    from changecap.models.device import parse_device

    # under torchrun each rank takes its own GPU (cuda:LOCAL_RANK) when there is one; alone, --device as given
    given = None if args.device is None else parse_device(args.device, "--device")
    ctx = init_distributed("cpu" if given is not None and given.type == "cpu" else "auto", field="--device")
    try:
        device = given if given is not None and not ctx.distributed else ctx.device
        captioner = ChangeCaptioner.from_pretrained(args.model, device=device, **predictor_options(args))
        tile = args.tile if args.tile is not None else int(captioner.preprocess.image_size)
        settings = SceneSettings(str(args.before), str(args.after), str(args.model), tile, args.overlap, args.bands,
                                 args.align, batch_size=args.batch_size, precision=args.precision)  # fmt: skip
        settings.validate()
        out = Path(args.out)
        if ctx.is_main:
            out.mkdir(parents=True, exist_ok=True)
            record_settings(out, settings)  # a resumed run must match the recorded settings
        barrier(ctx)
        done = sum(1 for _ in caption_tiles(captioner, settings, out, rank=ctx.rank, world_size=ctx.world_size,
                                            progress=not args.no_progress and ctx.is_main))  # fmt: skip
        barrier(ctx)  # every rank's tiles are in before rank 0 merges
        if ctx.is_main:
            counts = write_outputs(settings, out, captioner.predicts_masks)
            print(f"{counts['tiles']} tiles: {counts['captioned']} captioned ({done} in this run), "
                  f"{counts['skipped']} skipped (nodata), {counts['changed']} changed → {out}")  # fmt: skip
    finally:
        cleanup_distributed()
    return 0
