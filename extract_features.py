#!/usr/bin/env python
"""Extract dense per-image feature maps for the feature-field baseline (dino_train.py, cluster.py).

    python extract_features.py -s ../shared/data/maryRose                       # classic (weight-free)
    python extract_features.py -s SCENE --extractor dinov2 --weights dinov2_vits14_pretrain.pth

Writes features.pt (default output/features/<scene folder name>/features.pt, relative to the current folder,
where dino_train.py finds it) = {image_name: Tensor[C, h, w] float16, "__meta__": {...}} with h, w ~ image / --stride,
C = --dim after one PCA over all images. "classic" is NOT DINO: a weight-free stand-in (multi-scale Lab colour
+ HOG-like gradient histograms). dino/dinov2 load a LOCAL checkpoint through timm (or --hub-repo, a local
clone of the model's repository); nothing is ever downloaded.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence

from utils.errors import ArgumentParser, DefaultsHelpFormatter, cli_main
from utils.outputs import add_force_flag


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="extract_features.py", description=__doc__.split("\n\n")[2].strip(),
                                formatter_class=DefaultsHelpFormatter)
    p.add_argument("-s", "--source_path", required=True, help="scene folder (COLMAP, LLFF or NeRF-synthetic)")
    p.add_argument("-i", "--images", default="images", help="image folder inside the source")
    p.add_argument("-r", "--resolution", type=int, default=-1,
                   help="Inria's -r: -1 auto (<= 1600 px), 1/2/4/8 divide, > 8 target width")
    p.add_argument("--extractor", default="classic", choices=("classic", "dino", "dinov2"),
                   help="classic: weight-free colour+texture stand-in (not DINO); dino/dinov2: ViT from --weights")
    p.add_argument("--weights", default=None, help="dino/dinov2: local checkpoint file, e.g. "
                   "dino_deitsmall16_pretrain.pth or dinov2_vits14_pretrain.pth (never downloaded)")
    p.add_argument("--arch", default=None, help="timm model name (default vit_small_patch16_224.dino / "
                   "vit_small_patch14_dinov2.lvd142m) or, with --hub-repo, the hubconf entry "
                   "(dino_vits16 / dinov2_vits14)")
    p.add_argument("--hub-repo", default=None, help="local clone of facebookresearch/dino(v2): loaded with "
                   "torch.hub.load(DIR, source='local') instead of timm")
    p.add_argument("--dim", type=int, default=64, help="output channels after PCA (capped by the raw channel count)")
    p.add_argument("--stride", type=int, default=4, help="feature map = image size / stride")
    p.add_argument("--position", action="store_true", help="classic: add normalised pixel position channels")
    p.add_argument("--pca-samples", type=int, default=200_000, help="pixels sampled over all images for the PCA")
    p.add_argument("--max-tokens", type=int, default=4096, help="ViT: at most this many patch tokens per image")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="device for the ViT")
    p.add_argument("--out", default="", help="output file (default: output/features/<name of SOURCE>/features.pt; "
                   "never inside SOURCE, an input)")
    add_force_flag(p)
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return p


@cli_main
def main(argv: Optional[Sequence[str]] = None) -> int:
    from features.extractors import ExtractorConfig
    from features.pipeline import run_extract
    from segmentation.cli import check_compute, one_line_warnings

    a = build_parser().parse_args(argv)
    check_compute(None, a.device)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    cfg = ExtractorConfig(extractor=a.extractor, weights=a.weights, arch=a.arch, hub_repo=a.hub_repo, dim=a.dim,
                          stride=a.stride, position=a.position, pca_samples=a.pca_samples, max_tokens=a.max_tokens,
                          seed=a.seed, device=a.device)
    with one_line_warnings():
        run_extract(a.source_path, cfg, a.out, a.images, a.resolution, a.progress, log=print, force=a.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
