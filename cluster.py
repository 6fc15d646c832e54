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

from segmentation.cli import add_compute_args, set_torch_threads
from utils.errors import ArgumentParser, DefaultsHelpFormatter, cli_main
from utils.outputs import add_force_flag


def build_parser() -> argparse.ArgumentParser:
    from features.clustering import ClusterConfig

    d = ClusterConfig()
    p = ArgumentParser(prog="cluster.py", description=__doc__.split("\n\n")[2].strip(),
                                formatter_class=DefaultsHelpFormatter)
    p.add_argument("-m", "--model_path", "--model", required=True, help="trained model folder (Inria layout)")
    p.add_argument("--k", type=int, required=True, help="number of clusters")
    p.add_argument("--feature-weight", type=float, default=d.feature_weight, help="weight of the unit features")
    p.add_argument("--xyz-weight", type=float, default=d.xyz_weight,
                   help="weight of positions normalised to the scene's 90th-percentile radius")
    p.add_argument("--features", default="", help="gaussian_features.pt (default: MODEL/features/)")
    p.add_argument("--iteration", type=int, default=-1, help="point_cloud/iteration_N to load (-1: newest)")
    p.add_argument("--out", default="", help="output folder (default: MODEL/clusters)")
    p.add_argument("--select-by-mask", nargs=2, action="append", default=[], metavar=("VIEW", "MASK"),
                   help="select clusters mostly inside MASK (binary image) seen from VIEW (image name); repeatable")
    p.add_argument("--inside-frac", type=float, default=0.5,
                   help="a cluster is selected when this fraction of its rendered weight lies inside the masks")
    p.add_argument("--render-views", type=int, default=4, help="views rendered with the cluster colours")
    p.add_argument("--no-cluster-plys", dest="cluster_plys", action="store_false",
                   help="do not write one PLY per cluster")
    p.add_argument("--minibatch-above", type=int, default=d.minibatch_above,
                   help="use MiniBatchKMeans above this many Gaussians")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("-s", "--source_path", default="", help="scene folder (default: cfg_args'; else cameras.json)")
    add_compute_args(p, threads_help="CPU threads for the rasterizer and torch (default 0: all cores)")
    add_force_flag(p)
    return p


@cli_main
def main(argv: Optional[Sequence[str]] = None) -> int:
    from features.clustering import ClusterConfig
    from features.pipeline import ClusterJob, run_cluster
    from segmentation.cli import check_compute, one_line_warnings
    from utils.errors import UserError

    a = build_parser().parse_args(argv)
    check_compute(a.backend, a.device)
    set_torch_threads(a.num_threads)
    if a.k < 1:
        raise UserError(f"--k {a.k}: must be >= 1")
    if not 0.0 <= a.inside_frac <= 1.0:
        raise UserError(f"--inside-frac {a.inside_frac}: must be in [0, 1]")
    cfg = ClusterConfig(k=a.k, feature_weight=a.feature_weight, xyz_weight=a.xyz_weight,
                        minibatch_above=a.minibatch_above, seed=a.seed)
    job = ClusterJob(model_path=a.model_path, cluster=cfg, features=a.features, iteration=a.iteration, out=a.out,
                     select=[tuple(x) for x in a.select_by_mask], inside_frac=a.inside_frac,
                     render_views=a.render_views, cluster_plys=a.cluster_plys, source_path=a.source_path,
                     backend=a.backend, num_threads=a.num_threads, device=a.device, force=a.force)
    with one_line_warnings():
        run_cluster(job, log=print)
    return 0


if __name__ == "__main__":
    sys.exit(main())
