#!/usr/bin/env python
"""Score a segmentation against ground-truth 2D masks on held-out views.

    python eval_segmentation.py -m MODEL --labels MODEL/segmentation/labels.npy --gt-masks GT [--split test]

The selected Gaussians are rendered as a mask inside the full scene (--render scene, default: other
Gaussians occlude them, as in the ground-truth masks of real photos) or alone (--render object: what a viewer
shows of extracted.ply) and compared with the ground truth per view: IoU and pixel accuracy, averaged into mIoU / mAcc. Writes eval.json (keys miou, macc,
render, views, ...) beside labels.npy unless --out says otherwise.
"""
from __future__ import annotations

import argparse
import sys

from segmentation.cli import add_compute_args, add_view_args
from utils.errors import ArgumentParser, cli_main
from utils.outputs import add_force_flag


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="eval_segmentation.py", description=__doc__.split("\n\n")[2].strip())
    p.add_argument("-m", "--model_path", "--model", required=True,
                   help="trained model: Inria folder, splatfacto run folder or export PLY, or gsplat ckpt_*.pt / "
                        "result folder")
    p.add_argument("--labels", required=True, help="labels.npy written by segment.py")
    p.add_argument("--gt-masks", required=True, help="ground-truth masks: folder or COCO json, matched to views "
                   "by image stem like segment.py's --masks")
    p.add_argument("--split", default="test", choices=("test", "train", "all"),
                   help="views to score (default test: the --eval hold-out, every 8th view or NeRF-synthetic's test set)")
    p.add_argument("--gt-format", default="auto", choices=("auto", "binary", "ids", "sam", "coco"),
                   help="ground-truth mask format (default: auto-detected)")
    p.add_argument("--gt-labels", default=None, help="GT ids in labels.npy's order, e.g. 3,7 (default: the ids "
                   "segment.py used, from summary.json beside labels.npy)")
    p.add_argument("--render", default="scene", choices=("scene", "object"),
                   help="scene (default): the selection inside the full scene, occluded by the rest (floaters in "
                        "front count against it); object: the selected Gaussians alone, as a viewer shows "
                        "extracted.ply (an object hidden behind another in a view counts against it)")
    add_view_args(p)
    p.add_argument("--out", default="", help="eval.json path (default: beside labels.npy)")
    add_force_flag(p)
    add_compute_args(p)
    p.add_argument("--no-progress", dest="progress", action="store_false")
    return p


@cli_main
def main(argv: list[str] | None = None) -> int:
    from segmentation.cli import check_compute, one_line_warnings
    from segmentation.evaluate import EvalConfig, run_evaluation

    a = build_parser().parse_args(argv)
    check_compute(a.backend, a.device)
    cfg = EvalConfig(model_path=a.model_path, labels=a.labels, gt_masks=a.gt_masks, split=a.split,
                     iteration=a.iteration, gt_format=a.gt_format, gt_labels=a.gt_labels,
                     source_path=a.source_path, images=a.images, resolution=a.resolution, out=a.out,
                     backend=a.backend, num_threads=a.num_threads, device=a.device, progress=a.progress,
                     render=a.render, force=a.force)
    with one_line_warnings():
        result, path = run_evaluation(cfg, log=print)
    print(result.table())
    if result.miou is None:
        print(f"no labelled pixel in any ground truth or prediction; wrote {path}")
    else:
        print(f"mIoU {result.miou:.4f}  mAcc {result.macc:.4f}  over {len(result.views)} views "
              f"({a.render} protocol); wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
