"""``changecap scene BEFORE.tif AFTER.tif --model M --out DIR``: caption two whole georeferenced scenes tile by tile
(``changecap.inference.scene``); resumable, shardable with ``torchrun``."""

from __future__ import annotations

import argparse
import sys

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
    p.add_argument("--tile", type=int, help="tile side in source pixels (default: the model's training pair size, "
                   "or the scenes' overlap's longer side when that is smaller)")
    p.add_argument("--overlap", type=int, default=0, help="pixels shared by neighbouring tiles (default 0)")
    p.add_argument("--bands", type=_bands, help="three 1-based bands read as R,G,B (e.g. 3,2,1; default 1,2,3)")
    p.add_argument("--align", action="store_true", help="resample AFTER onto BEFORE's grid (other CRS/resolution)")
    p.add_argument("--min-valid", type=float, default=0.5,
                   help="skip a tile where a date has data on less than this share of it (default 0.5)")
    p.add_argument("--batch-size", type=int, default=16, help="tiles per forward pass (default 16)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 … (default: cuda when available)")
    add_predictor_arguments(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from changecap.cli.signals import Terminated
    from changecap.data.files import remove_stale_temps
    from changecap.engine.distributed import barrier, cleanup_distributed, init_distributed
    from changecap.inference import ChangeCaptioner
    from changecap.inference.scene import (
        MASKS_DIR,
        SceneSettings,
        caption_tiles,
        check_inputs,
        check_out_dir,
        read_results,
        record_settings,
        results_path,
        write_outputs,
    )
    from changecap.inference.scene_report import describe_skips
    from changecap.models.device import parse_device

    out = Path(args.out)
    recorded = False
    # under torchrun each rank takes its own GPU (cuda:LOCAL_RANK) when there is one; alone, --device as given
    given = None if args.device is None else parse_device(args.device, "--device")
    ctx = init_distributed("cpu" if given is not None and given.type == "cpu" else "auto", field="--device")
    try:
        check_out_dir(out)  # before any work: an unwritable --out costs no model load
        device = given if given is not None and not ctx.distributed else ctx.device
        captioner = ChangeCaptioner.from_pretrained(args.model, device=device, **predictor_options(args))
        tile = args.tile if args.tile is not None else int(captioner.preprocess.image_size)
        settings = SceneSettings(str(args.before), str(args.after), str(args.model), tile, args.overlap,
                                 args.bands, args.align, batch_size=args.batch_size, precision=args.precision,
                                 min_valid=args.min_valid)  # fmt: skip
        settings.validate()
        # the inputs are checked before the settings are recorded: a refused run can be retried in this folder
        settings = check_inputs(settings, default_tile=args.tile is None)
        resumed = 0
        if ctx.is_main:
            for folder in (out, out / MASKS_DIR):  # what an earlier run killed mid-write left half written
                remove_stale_temps(folder)
            record_settings(out, settings)  # a resumed run must match the recorded settings
            resumed = len(read_results(out))
        recorded = True
        barrier(ctx)
        for _ in caption_tiles(captioner, settings, out, rank=ctx.rank, world_size=ctx.world_size,
                               progress=not args.no_progress and ctx.is_main):  # fmt: skip
            pass
        barrier(ctx)  # every rank's tiles are in before rank 0 merges
        if ctx.is_main:
            counts = write_outputs(settings, out, captioner.capabilities.change_mask)
            print(f"{counts['tiles']} tiles ({resumed} done by an earlier run, {counts['tiles'] - resumed} in "
                  f"this one): {counts['captioned']} captioned, "
                  f"{describe_skips(counts['skipped_by_reason'], settings.min_valid)}; "
                  f"{counts['changed']} changed → {out}")  # fmt: skip
    except KeyboardInterrupt as e:
        what = "terminated" if isinstance(e, Terminated) else "interrupted"
        results = results_path(out, ctx.rank, ctx.world_size)
        kept = f"; the finished tiles are kept in {results}: run the same command to go on" if recorded else ""
        print(f"{what}{kept}", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    finally:
        cleanup_distributed()
    return 0
