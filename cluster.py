#!/usr/bin/env python
"""Cluster a model's Gaussians by learnt feature (dino_train.py) and position; optionally pick clusters by mask.

    python cluster.py -m output/maryRose --k 12
    python cluster.py -m MODEL --k 12 --select-by-mask IMG_9670 masks/IMG_9670.png [--inside-frac 0.5]

KMeans (MiniBatchKMeans above 200k Gaussians) on [feature-weight * L2-normalised feature, xyz-weight *
normalised position]. Writes labels.npy (cluster ids), clusters/cluster_XXX.ply, clustered.ply (SH DC = cluster
colour), renders/*.png and clusters.json into --out (default MODEL/clusters). --select-by-mask VIEW MASK (repeat
for more views) selects clusters whose rendered weight in VIEW is mostly inside MASK and writes
selection/labels.npy (1 selected, 0 background, -1 feature never trained) + selection/extracted.ply in
segment.py's format, scored by eval_segmentation.py --labels OUT/selection/labels.npy.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from utils.errors import cli_main


def build_parser() -> argparse.ArgumentParser:
    from arguments import config_parser
    from features.pipeline import ClusterJobConfig

    return config_parser(ClusterJobConfig, prog="cluster.py", description=__doc__.split("\n\n")[2].strip())


@cli_main
def main(argv: Optional[Sequence[str]] = None) -> int:
    from arguments import parse_config
    from arguments.cli import one_line_warnings, set_torch_threads
    from features.pipeline import run_cluster
    from scene.compute import check_compute

    cfg, _ = parse_config(build_parser(), argv)
    check_compute(cfg.backend, cfg.device)
    set_torch_threads(cfg.num_threads)
    with one_line_warnings():
        run_cluster(cfg, log=print)
    return 0


if __name__ == "__main__":
    sys.exit(main())
