#!/usr/bin/env python
"""Segment a trained 3DGS model from 2D masks by gradient voting.

    python segment.py -m MODEL --masks MASKS [--labels 3,7] [--views 0.1] [--out DIR]
    python segment.py                      # built-in demo on a generated scene (no data needed)

Each Gaussian sums, over the masked views, the alpha*T mass it puts on every mask label and on the
background; it joins the label with the largest mass (one label: inside mass > outside mass, the paper's
rule). Writes extracted.ply (or extracted_<label>.ply), deleted.ply, labels.npy, votes.npy, summary.json,
preview PNGs and views.gif into --out (default MODEL/segmentation); inputs are never modified.
"""
from __future__ import annotations

import argparse
import sys

from segmentation.cli import add_compute_args, add_view_args
from utils.errors import UserError, cli_main

UNDECIDED_HELP = (
    "Gaussians that no voted view saw (zero mass, e.g. hidden inside an object or outside every masked view): "
    "'keep' leaves them in deleted.ply (the paper), 'drop' removes them from both outputs, 'propagate' gives "
    "them the label of their --knn nearest voted neighbours in 3D. 'auto' (default): keep when every view "
    "has a mask and all are voted (reproduces the paper), propagate when --views subsamples or masks are "
    "missing")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="segment.py", description=__doc__.split("\n\n")[2].strip(),
        usage="%(prog)s [-m MODEL --masks MASKS] [options]   (no arguments: built-in demo)")
    g = p.add_argument_group("model and views")
    g.add_argument("-m", "--model_path", "--model", default="",
        help="trained model: Inria folder, splatfacto run folder or export PLY, or gsplat ckpt_*.pt / "
             "result folder")
    add_view_args(g, source_help="scene folder (default: the one in MODEL/cfg_args; without it the cameras come "
                                 "from MODEL/cameras.json)")
    g.add_argument("--split", default="train", choices=("train", "test", "all"),
                   help="views to use (default train: what the model was trained on, the --eval hold-out excluded)")
    g = p.add_argument_group("masks")
    g.add_argument("--masks", default="", help="mask folder or COCO .json (default: SOURCE/masks); masks are "
                   "matched to views by image file stem, views without a mask are skipped")
    g.add_argument("--mask-format", default="auto", choices=("auto", "binary", "ids", "sam", "coco"),
                   help="binary 0/255 images, id PNGs (0 = background), SAM <image>/<k>.png folders, COCO RLE json "
                        "(default: auto-detected)")
    g.add_argument("--labels", default=None, help="ids to segment for id/SAM/COCO masks, e.g. 3,7 (COCO: "
                   "category ids or names); one -> extracted.ply, several -> one PLY per label (default: all)")
    g.add_argument("--views", default=None, help="vote on every N-th masked view (integer) or on a fraction "
                   "of them (e.g. 0.1 = 10%% of the masks, evenly spread); default all")
    g = p.add_argument_group("decision")
    g.add_argument("--margin", type=float, default=0.0,
                   help="select a Gaussian only if (mass on its label - largest other mass) / total mass "
                        "exceeds this; one label: (in - out) / (in + out) > margin. 0 (default) = the paper; 0.2 keeps "
                        "only clear majorities (cleaner cut), negative values select more")
    g.add_argument("--undecided", default="auto", choices=("auto", "keep", "drop", "propagate"),
                   help=UNDECIDED_HELP)
    g.add_argument("--knn", type=int, default=8, help="neighbours for --undecided propagate (default 8)")
    g = p.add_argument_group("output")
    g.add_argument("--out", default="", help="output folder (default: MODEL/segmentation; demo: output/demo)")
    g.add_argument("--previews", type=int, default=4, help="preview PNGs, one strip original | extracted | deleted | mask per view (default 4)")
    g.add_argument("--gif-frames", type=int, default=24, help="frames of views.gif (default 24, 0: no GIF)")
    g.add_argument("--preview-size", type=int, default=480, help="longest side of a preview panel in px (default 480)")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    g = p.add_argument_group("rendering")
    add_compute_args(g, device_help="device holding the Gaussians (default cpu; cuda with a CUDA backend)")
    g = p.add_argument_group("demo")
    g.add_argument("--demo", action="store_true", help="run the built-in demo (also: no arguments at all)")
    g.add_argument("--demo-objects", default="ball",
                   help="demo objects to segment: ball (default), box, can, a comma list (multi-label) or all")
    return p


@cli_main
def main(argv: list[str] | None = None) -> int:
    from segmentation.cli import one_line_warnings

    args = build_parser().parse_args(argv)
    with one_line_warnings():
        if args.demo or not args.model_path:
            if not args.demo and (args.masks or args.source_path):
                raise UserError("--masks/-s given without -m/--model_path; pass the model folder too")
            return _demo(args)
        return _segment(args)


def _segment(args: argparse.Namespace) -> int:
    from segmentation.pipeline import SegmentConfig, format_summary, run_segmentation

    cfg = SegmentConfig(
        model_path=args.model_path, iteration=args.iteration, source_path=args.source_path, images=args.images,
        resolution=args.resolution, masks=args.masks, mask_format=args.mask_format, labels=args.labels,
        views=args.views, split=args.split, margin=args.margin, undecided=args.undecided, knn=args.knn,
        out=args.out, previews=args.previews, gif_frames=args.gif_frames, preview_size=args.preview_size,
        backend=args.backend, num_threads=args.num_threads, device=args.device, progress=args.progress)
    result = run_segmentation(cfg, log=print)
    print(format_summary(result.summary))
    print(f"outputs in {result.out}: {', '.join(result.outputs)}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from segmentation.demo import run_demo

    overrides = {k: getattr(args, k) for k in ("views", "undecided", "knn", "backend", "num_threads",
                                                "previews", "gif_frames", "progress")}
    if args.margin:
        overrides["margin"] = args.margin
    defaults = build_parser().parse_args([])
    overrides = {k: v for k, v in overrides.items() if v != getattr(defaults, k) or k in ("progress",)}
    run_demo(args.out or "output/demo", args.demo_objects, overrides)
    return 0


if __name__ == "__main__":
    sys.exit(main())
