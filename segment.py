#!/usr/bin/env python
"""Segment a trained 3DGS model from 2D masks by gradient voting.

    python segment.py -m MODEL --masks MASKS [--labels 3,7] [--views 0.1] [--out DIR]
    python segment.py -m MODEL --masks SAM_DIR --prompt IMG_0001:120,80       # SAM amg.py output + one click
    python segment.py -m MODEL --prompt-box IMG_0001:40,30,200,180            # only the photos + one box
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
from utils.errors import ArgumentParser, UserError, cli_main
from utils.outputs import add_force_flag

UNDECIDED_HELP = (
    "Gaussians that no voted view saw (zero mass, e.g. hidden inside an object or outside every masked view): "
    "'keep' leaves them in deleted.ply (the paper), 'drop' removes them from both outputs, 'propagate' gives "
    "them the label of their --knn nearest voted neighbours in 3D. 'auto' (default): keep when every view "
    "has a mask and all are voted (reproduces the paper), propagate when --views subsamples or masks are "
    "missing")


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
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
    g.add_argument("--masks", default="", help="mask folder, one mask image, COCO .json, or SAM automatic-mask "
                   "output (<image>/<k>.png folders: per-view proposals, named by --prompt); default: SOURCE/masks "
                   "unless a prompt is given. Masks are matched to views by image file stem")
    g.add_argument("--mask-format", default="auto", choices=("auto", "binary", "ids", "sam", "sam-tracked", "coco"),
                   help="binary 0/255 images, id PNGs (0 = background), sam: SAM amg.py folders (proposals, ids "
                        "per image), sam-tracked: the same layout with ids consistent across views (SAM2 video), "
                        "COCO RLE json (default: auto-detected; SAM layouts are read as proposals)")
    g.add_argument("--labels", default=None, help="ids to segment for id/SAM/COCO masks, e.g. 3,7 (COCO: "
                   "category ids or names); one -> extracted.ply, several -> one PLY per label (default: all)")
    g.add_argument("--views", default=None, help="vote on every N-th masked view (integer) or on a fraction "
                   "of them (e.g. 0.1 = 10%% of the masks, evenly spread); default all")
    g = p.add_argument_group("prompt (name the object in one view, in the photo file's pixel coordinates)")
    g.add_argument("--prompt", action="append", default=[], metavar="VIEW:X,Y",
                   help="a point on the object (repeatable); VIEW is the image file name, X,Y its pixel column and "
                        "row. With --masks SAM_DIR it picks that view's SAM proposal; without --masks the object "
                        "is cut out of the photo (GrabCut)")
    g.add_argument("--negative", action="append", default=[], metavar="VIEW:X,Y",
                   help="a point that is NOT the object (repeatable; on a view with a --prompt or --prompt-box)")
    g.add_argument("--prompt-box", action="append", default=[], metavar="VIEW:X0,Y0,X1,Y1",
                   help="a box around the object (top-left and bottom-right pixels, inclusive)")
    g.add_argument("--granularity", default="whole", choices=("whole", "part"),
                   help="which SAM proposal under a point: whole (default: the largest that covers less than half "
                        "the view) or part (the smallest)")
    g.add_argument("--proposals", default="", metavar="SAM_DIR",
                   help="SAM automatic-mask output used to complete views without a mask or to associate a prompt "
                        "(default: proposals from the photos: superpixels)")
    g.add_argument("--no-complete", dest="complete", action="store_false",
                   help="with masks for only some views: vote those views only (the paper's rule) instead of "
                        "completing the others from proposals through the 3D model")
    g.add_argument("--everything", action="store_true",
                   help="every object of the scene from SAM automatic-mask output (--masks SAM_DIR): instance ids "
                        "consistent in 3D -> labels.npy, instances.json, extracted_<id>.ply, instances.ply, "
                        "masks_consistent/ (no prompt needed)")
    g.add_argument("--min-gaussians", type=int, default=100,
                   help="--everything: instances with fewer Gaussians become background (default 100)")
    g.add_argument("--pick", action="append", default=[], metavar="VIEW:X,Y",
                   help="on an existing --everything result in --out: write the instances under these points as "
                        "extracted.ply / deleted.ply (repeatable; no voting)")
    g.add_argument("--rounds", type=int, default=4,
                   help="association rounds at most (default 4; stops earlier once the selection is stable)")
    g = p.add_argument_group("decision")
    g.add_argument("--margin", type=float, default=None,
                   help="select a Gaussian only if (mass on its label - largest other mass) / total mass "
                        "exceeds this; one label: (in - out) / (in + out) > margin. Default: 0 (the paper) when "
                        "every voted mask was given, 0.2 when some were associated from proposals; 0.2 keeps only "
                        "clear majorities (cleaner cut), negative values select more")
    g.add_argument("--allow-empty", action="store_true",
                   help="accept masks that are all background (the run then selects nothing) instead of stopping")
    g.add_argument("--undecided", default="auto", choices=("auto", "keep", "drop", "propagate"),
                   help=UNDECIDED_HELP)
    g.add_argument("--knn", type=int, default=8, help="neighbours for --undecided propagate (default 8)")
    g = p.add_argument_group("output")
    g.add_argument("--out", default="", help="output folder (default: MODEL/segmentation; demo: output/demo)")
    g.add_argument("--previews", type=int, default=4, help="preview PNGs, one strip original | extracted | deleted | mask per view (default 4)")
    g.add_argument("--gif-frames", type=int, default=24, help="frames of views.gif (default 24, 0: no GIF)")
    g.add_argument("--preview-size", type=int, default=480, help="longest side of a preview panel in px (default 480)")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    add_force_flag(g)
    g = p.add_argument_group("rendering")
    add_compute_args(g, device_help="device holding the Gaussians (default cpu; cuda with a CUDA backend)")
    g = p.add_argument_group("demo")
    g.add_argument("--demo", action="store_true", help="run the built-in demo (also: no arguments at all)")
    g.add_argument("--demo-objects", default="ball",
                   help="demo objects to segment: ball (default), box, can, a comma list (multi-label) or all")
    return p


@cli_main
def main(argv: list[str] | None = None) -> int:
    from segmentation.cli import check_compute, one_line_warnings

    args = build_parser().parse_args(argv)
    check_compute(args.backend, args.device)
    with one_line_warnings():
        if args.demo or not args.model_path:
            if not args.demo and (args.masks or args.source_path or args.prompt or args.prompt_box):
                raise UserError("--masks/-s/--prompt given without -m/--model_path; pass the model folder too")
            return _demo(args)
        return _segment(args)


def _segment(args: argparse.Namespace) -> int:
    from segmentation.pipeline import SegmentConfig, format_summary, run_segmentation

    cfg = SegmentConfig(
        model_path=args.model_path, iteration=args.iteration, source_path=args.source_path, images=args.images,
        resolution=args.resolution, masks=args.masks, mask_format=args.mask_format, labels=args.labels,
        views=args.views, split=args.split, prompt=args.prompt, negative=args.negative, prompt_box=args.prompt_box,
        proposals=args.proposals, granularity=args.granularity, complete=args.complete, rounds=args.rounds,
        allow_empty=args.allow_empty, everything=args.everything, min_gaussians=args.min_gaussians,
        pick=args.pick, margin=args.margin, undecided=args.undecided, knn=args.knn,
        out=args.out, previews=args.previews, gif_frames=args.gif_frames, preview_size=args.preview_size,
        backend=args.backend, num_threads=args.num_threads, device=args.device, progress=args.progress,
        force=args.force)
    if cfg.pick:
        from segmentation.pipeline import run_pick

        info = run_pick(cfg, log=print)
        print(f"extracted {info['extracted']:,} Gaussians of instance(s) {', '.join(map(str, info['instances']))}; "
              f"deleted.ply keeps {info['deleted']:,}")
        return 0
    result = run_segmentation(cfg, log=print)
    print(format_summary(result.summary))
    print(f"outputs in {result.out}: {', '.join(_grouped(result.outputs))}")
    return 0


def _grouped(names: list[str]) -> list[str]:
    """File names, with the files of a sub-folder shown as one entry (``masks_associated/ (60 files)``)."""
    out: list[str] = []
    folders: dict[str, int] = {}
    for n in names:
        if "/" in n:
            d = n.split("/", 1)[0] + "/"
            if d not in folders:
                out.append(d)
            folders[d] = folders.get(d, 0) + 1
        else:
            out.append(n)
    return [f"{n} ({folders[n]} files)" if n in folders else n for n in out]


def _demo(args: argparse.Namespace) -> int:
    from segmentation.demo import run_demo

    overrides = {k: getattr(args, k) for k in ("views", "undecided", "knn", "backend", "num_threads",
                                                "previews", "gif_frames", "progress", "force")}
    if args.margin is not None:
        overrides["margin"] = args.margin
    defaults = build_parser().parse_args([])
    overrides = {k: v for k, v in overrides.items() if v != getattr(defaults, k) or k in ("progress", "force")}
    run_demo(args.out or "output/demo", args.demo_objects, overrides)
    return 0


if __name__ == "__main__":
    sys.exit(main())
