#!/usr/bin/env python
"""Score affordance labellings: per-class IoU and recall of 2D label maps and of a rendered 3D labelling.

    python eval_affordance.py --gt GT --pred MODEL/affordance/labels_2d
    python eval_affordance.py --gt GT -m MODEL --labels MODEL/affordance/labels.npy [--split test]

Confusion counts are pooled over all scored images; means are over the classes present in the ground truth
(affordances only, and with the background). GT: label PNGs (class indices; 0/255 = binary) or UMD
*_label.mat (gt_label), matched to predictions / views by name (x.png, x_rgb.jpg and x_label.mat match).
Classes come from --classes, else the summary.json affordance.py wrote, else the UMD list. Prints a table and
writes JSON (default eval_affordance.json beside the inputs).
"""
from __future__ import annotations

import argparse
import sys

from segmentation.cli import add_compute_args, add_view_args
from utils.errors import ArgumentParser, cli_main
from utils.outputs import add_force_flag


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="eval_affordance.py", description=__doc__.split("\n\n")[2].strip())
    p.add_argument("--gt", required=True, help="ground-truth folder: label PNGs or UMD *_label.mat")
    p.add_argument("--pred", default="", help="folder of predicted label PNGs (affordance.py's labels_2d/)")
    p.add_argument("-m", "--model_path", "--model", default="", help="model folder, with --labels: score the 3D "
                   "labelling rendered into the --split views")
    p.add_argument("--labels", default="", help="labels.npy written by affordance.py")
    p.add_argument("--classes", default=None, help="class names in label order (default: from summary.json "
                   "beside the inputs, else UMD's)")
    p.add_argument("--split", default="test", choices=("test", "train", "all"),
                   help="views the 3D labelling is rendered into (default test: the --eval hold-out)")
    p.add_argument("--include-annotated", action="store_true",
                   help="2D: also score views whose label maps were the annotated input (default: excluded)")
    add_view_args(p)
    p.add_argument("--out", default="", help="JSON path (default: eval_affordance.json beside the inputs)")
    add_force_flag(p)
    add_compute_args(p)
    p.add_argument("--no-progress", dest="progress", action="store_false")
    return p


@cli_main
def main(argv: list[str] | None = None) -> int:
    from affordance.evaluate import AffordanceEvalConfig, run_eval
    from segmentation.cli import check_compute, one_line_warnings

    a = build_parser().parse_args(argv)
    check_compute(a.backend, a.device)
    cfg = AffordanceEvalConfig(gt=a.gt, pred=a.pred, model_path=a.model_path, labels=a.labels, classes=a.classes,
                               split=a.split, include_annotated=a.include_annotated, iteration=a.iteration,
                               source_path=a.source_path, images=a.images, resolution=a.resolution, out=a.out,
                               backend=a.backend, num_threads=a.num_threads, device=a.device, progress=a.progress,
                               force=a.force)
    with one_line_warnings():
        _, path = run_eval(cfg, log=print)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
