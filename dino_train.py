#!/usr/bin/env python
"""Distil 2D feature maps into per-Gaussian features on a trained model with frozen geometry.

    python dino_train.py -m output/maryRose     # features: output/features/<scene>/features.pt
    python dino_train.py -m MODEL --features feats.pt --iterations 3000 --cosine-weight 0.1

Each Gaussian gets a feature vector (Adam) so that renders (override_color = features, black background)
match the features.pt maps upsampled to the render size, standardised per channel; all channels render in
one pass. Only training views are used (the --eval hold-out is excluded). Writes
MODEL/features/gaussian_features.pt and MODEL/features/config.json.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from segmentation.cli import add_compute_args, set_torch_threads
from utils.errors import ArgumentParser, DefaultsHelpFormatter, cli_main
from utils.outputs import add_force_flag


def build_parser() -> argparse.ArgumentParser:
    from features.field import FieldConfig

    d = FieldConfig()
    p = ArgumentParser(prog="dino_train.py", description=__doc__.split("\n\n")[2].strip(),
                                formatter_class=DefaultsHelpFormatter)
    p.add_argument("-m", "--model_path", "--model", required=True, help="trained model folder (Inria layout)")
    p.add_argument("--features", default="", help="features.pt from extract_features.py (default: "
                   "output/features/<scene folder of cfg_args>/features.pt, extract_features.py's default)")
    p.add_argument("--iteration", type=int, default=-1, help="point_cloud/iteration_N to load (-1: newest)")
    p.add_argument("-s", "--source_path", default="", help="scene folder (default: cfg_args'; decides the "
                   "training split)")
    p.add_argument("--iterations", type=int, default=d.iterations, help="training iterations (one view each)")
    p.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate of the features")
    p.add_argument("--cosine-weight", type=float, default=d.cosine_weight,
                   help="weight of the (1 - cosine similarity) loss term added to L1")
    p.add_argument("--seed", type=int, default=d.seed)
    add_compute_args(p, threads_help="CPU threads for the rasterizer and torch (default 0: all cores)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    add_force_flag(p)
    return p


@cli_main
def main(argv: Optional[Sequence[str]] = None) -> int:
    from features.field import FieldConfig
    from features.pipeline import TrainJob, run_train
    from segmentation.cli import check_compute, one_line_warnings

    a = build_parser().parse_args(argv)
    check_compute(a.backend, a.device)
    set_torch_threads(a.num_threads)
    cfg = FieldConfig(iterations=a.iterations, lr=a.lr, cosine_weight=a.cosine_weight, backend=a.backend,
                      num_threads=a.num_threads, seed=a.seed)
    job = TrainJob(model_path=a.model_path, features=a.features, iteration=a.iteration, source_path=a.source_path,
                   field=cfg, device=a.device, progress=a.progress, force=a.force)
    with one_line_warnings():
        run_train(job, log=print)
    return 0


if __name__ == "__main__":
    sys.exit(main())
