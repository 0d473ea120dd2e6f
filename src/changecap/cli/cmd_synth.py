"""``changecap synth``: generate SynthCC, print its statistics, or draw its sample figure.

Three forms (exactly one of ``--out``, ``--stats``, ``--figure``)::

    changecap synth --out DIR [--preset tiny|small|full] [--pairs N] [--size S] [--seed K] [--workers W]
                    [--layout levir-mci|second-cc]
    changecap synth --stats DIR [--json]
    changecap synth --figure PNG --from DIR [--samples N] [--columns C] [--tile T]
    changecap synth --geotiff DIR [--grid G] [--size S] [--seed K]   (a georeferenced scene pair for `scene`)
"""

from __future__ import annotations

import argparse
import json
import sys

from changecap.errors import ChangeCapError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth",
        help="generate the SynthCC benchmark (LEVIR-MCI layout), its statistics or sample figure",
        description=(
            "Generate SynthCC, a procedural bi-temporal change-captioning benchmark, in the LEVIR-MCI layout "
            "(LevirCCcaptions.json + images/{train,val,test}/{A,B,label}/), with scene captions and land-cover maps "
            "of every single image (scene_captions.json + images/{split}/landcover/{A,B}/), or with --layout "
            "second-cc in the SECOND-CC layout (SECOND-CC-AUG.json + {split}/rgb/{A,B}/ + {split}/sem/{A,B}/ "
            "semantic maps). Same seed, same bytes. "
            "Presets: tiny (60 pairs, 64 px), small (2,400 pairs, 128 px), full (10,077 pairs, 256 px)."
        ),
    )
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--out", metavar="DIR", help="generate a set into DIR")
    mode.add_argument("--stats", metavar="DIR", help="print the statistics of a generated set")
    mode.add_argument("--figure", metavar="PNG", help="draw a sample figure of the set given by --from")
    mode.add_argument(
        "--geotiff",
        metavar="DIR",
        help="write a synthetic GeoTIFF scene pair (before.tif, after.tif, "
        "change_truth.tif; UTM 33N, 0.5 m) of --grid × --grid SynthCC cells, for `changecap scene`",
    )
    p.add_argument("--grid", type=int, default=8, help="--geotiff: cells per side (default 8)")
    g = p.add_argument_group("generation")
    g.add_argument("--preset", default="small", help="tiny | small | full (default small)")
    g.add_argument("--pairs", type=int, default=None, help="number of pairs (overrides the preset)")
    g.add_argument("--size", type=int, default=None, help="tile size in pixels (overrides the preset)")
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    g.add_argument("--workers", type=int, default=1, help="worker processes (default 1; output is identical)")
    g.add_argument(
        "--layout",
        choices=("levir-mci", "second-cc"),
        default="levir-mci",
        help="--out: LEVIR-MCI layout with change masks (default), or SECOND-CC's with per-date semantic maps",
    )
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    f = p.add_argument_group("statistics / figure")
    f.add_argument("--json", action="store_true", help="--stats: print JSON")
    f.add_argument("--from", dest="source", metavar="DIR", help="--figure: the SynthCC folder to draw")
    f.add_argument("--samples", type=int, default=8, help="--figure: number of pairs (default 8)")
    f.add_argument("--columns", type=int, default=2, help="--figure: pairs per row (default 2)")
    f.add_argument("--tile", type=int, default=128, help="--figure: tile size in pixels (default 128)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from changecap.data.files import check_output_dir, check_output_file

    if args.layout != "levir-mci" and args.out is None:
        raise ChangeCapError("--layout applies to --out (generating a set)")
    if args.out is not None:
        from changecap.synth import generate_synthcc
        from changecap.synth.second_cc import generate_second_cc

        check_output_dir(args.out, "--out")
        generate = generate_second_cc if args.layout == "second-cc" else generate_synthcc
        root = generate(
            args.out,
            pairs=args.pairs,
            size=args.size,
            seed=args.seed,
            preset=args.preset,
            workers=args.workers,
            progress=not args.no_progress,
        )
        print(f"wrote SynthCC ({args.preset} preset, {args.layout} layout) to {root}")
        return 0
    if args.geotiff is not None:
        from changecap.synth.geotiff import write_geotiff_pair

        check_output_dir(args.geotiff, "--geotiff")
        paths = write_geotiff_pair(args.geotiff, grid=args.grid, size=args.size or 128, seed=args.seed)
        print("wrote " + ", ".join(str(p) for p in paths))
        return 0
    if args.stats is not None:
        from changecap.synth.stats import format_statistics, synthcc_statistics

        stats = synthcc_statistics(args.stats)
        print(json.dumps(stats, indent=2) if args.json else format_statistics(stats))
        return 0
    if not args.source:
        raise ChangeCapError("--figure needs --from DIR (the SynthCC folder to draw)")
    from changecap.synth.figure import render_figure

    check_output_file(args.figure, "--figure")
    out = render_figure(args.source, args.figure, samples=args.samples, columns=args.columns, tile=args.tile)
    print(f"wrote {out}", file=sys.stdout)
    return 0
