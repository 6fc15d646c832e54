#!/usr/bin/env python
"""Few-shot affordance transfer: a few annotated images -> every training view -> per-Gaussian labels.

    python affordance.py -m MODEL --sources DIR [--classes a,b,c | FILE] [--k 5] [--out DIR]
    python affordance.py -m MODEL --sources DIR --extractor dinov2 --weights dinov2_vits14_pretrain.pth

Dense features of the annotated pixels (subsampled to --max-samples, balanced per class) label every pixel
of each training view by a cosine k-NN majority vote; the label maps are voted onto the Gaussians (the
alpha*T mass each Gaussian puts on each class, argmax). Writes labels_2d/, overlays_2d/, labels.npy,
votes.npy, labelled.ply, extracted_<class>.ply, renders/ and summary.json into --out (default
MODEL/affordance). The default "classic" extractor is weight-free colour + texture, NOT DINO.

Source layout (DIR, top level): labelme files <name>.json (polygon / rectangle / circle shapes, or
labelme >= 5.3 base64 masks), or images with integer label maps (0 = background, l = class l; 0/255 =
binary) at labels/<name>.png, <name>_label.png, <name>_label.mat (UMD gt_label) or <name>.png beside a
non-PNG image. Classes default to UMD's: background, grasp, cut, scoop, contain, pound, support, wrap-grasp.
"""
from __future__ import annotations

import argparse
import sys

from segmentation.cli import add_compute_args, add_view_args
from utils.errors import ArgumentParser, cli_main
from utils.outputs import add_force_flag


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="affordance.py", description=__doc__.split("\n\n")[2].strip(),
                                epilog=__doc__.split("\n\n")[3].strip(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("inputs")
    g.add_argument("-m", "--model_path", "--model", required=True, help="trained model folder (Inria layout)")
    g.add_argument("--sources", required=True, help="folder of annotated source images (layout below)")
    g.add_argument("--classes", default=None, help="class names in label order, background first: a,b,c or a "
                   "file with one name per line (default: the UMD part-affordance classes)")
    add_view_args(g)
    g.add_argument("--split", default="train", choices=("train", "test", "all"),
                   help="target views labelled and voted (default train)")
    g = p.add_argument_group("features and 2D transfer")
    g.add_argument("--extractor", default="classic", choices=("classic", "dino", "dinov2"),
                   help="classic: weight-free colour+texture stand-in (not DINO); dino/dinov2 need --weights")
    g.add_argument("--weights", default=None, help="dino/dinov2: local checkpoint (dino_deitsmall16_pretrain.pth, "
                   "dinov2_vits14_pretrain.pth); nothing is downloaded")
    g.add_argument("--arch", default=None, help="timm model name, or hubconf entry with --hub-repo")
    g.add_argument("--hub-repo", default=None, help="local clone of facebookresearch/dino(v2) (instead of timm)")
    g.add_argument("--dim", type=int, default=64, help="feature channels after PCA (default 64)")
    g.add_argument("--stride", type=int, default=4, help="feature map = image / stride (default 4)")
    g.add_argument("--k", type=int, default=5, help="neighbours in the cosine k-NN majority vote (default 5)")
    g.add_argument("--max-samples", type=int, default=50_000,
                   help="source pixels kept, balanced over classes (default 50000)")
    g.add_argument("--knn-backend", default="auto", choices=("auto", "sklearn", "faiss"),
                   help="auto: faiss if installed, else scikit-learn (both exact)")
    g.add_argument("--annotated-views", default="use", choices=("use", "transfer"),
                   help="target views that are themselves annotated sources: vote with their annotation (use, "
                        "default) or with a transferred map like the others (transfer)")
    g.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("3D labels")
    g.add_argument("--margin", type=float, default=0.0, help="keep a Gaussian's class only if (best - runner-up) "
                   "/ total mass > margin, else background (default 0: argmax)")
    g.add_argument("--undecided", default="keep", choices=("keep", "propagate"),
                   help="Gaussians no view saw: keep as -1 (default) or take their --knn3d nearest neighbours' class")
    g.add_argument("--knn3d", type=int, default=8, help="neighbours for --undecided propagate (default 8)")
    g = p.add_argument_group("output")
    g.add_argument("--out", default="", help="output folder (default MODEL/affordance)")
    g.add_argument("--renders", type=int, default=4, help="renders/<view>.png strips (default 4)")
    g.add_argument("--no-2d", dest="save_2d", action="store_false", help="do not write labels_2d/ and overlays_2d/")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    add_force_flag(g)
    g = p.add_argument_group("compute")
    add_compute_args(g, device_help="device for the ViT and the Gaussians (default cpu)")
    return p


@cli_main
def main(argv: list[str] | None = None) -> int:
    from affordance.pipeline import AffordanceConfig, format_summary, run_affordance
    from segmentation.cli import check_compute, one_line_warnings

    a = build_parser().parse_args(argv)
    check_compute(a.backend, a.device)
    cfg = AffordanceConfig(
        model_path=a.model_path, sources=a.sources, classes=a.classes, extractor=a.extractor, weights=a.weights,
        arch=a.arch, hub_repo=a.hub_repo, dim=a.dim, stride=a.stride, k=a.k, max_samples=a.max_samples,
        knn_backend=a.knn_backend, annotated_views=a.annotated_views, margin=a.margin, undecided=a.undecided,
        knn3d=a.knn3d, out=a.out, renders=a.renders, save_2d=a.save_2d, split=a.split, iteration=a.iteration,
        source_path=a.source_path, images=a.images, resolution=a.resolution, backend=a.backend,
        num_threads=a.num_threads, device=a.device, seed=a.seed, progress=a.progress, force=a.force)
    with one_line_warnings():
        result = run_affordance(cfg, log=print)
    print(format_summary(result.summary))
    print(f"outputs in {result.out}: {', '.join(result.outputs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
