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

from utils.errors import cli_main


def build_parser() -> argparse.ArgumentParser:
    from arguments import config_parser
    from features.pipeline import ExtractFeaturesConfig

    return config_parser(ExtractFeaturesConfig, prog="extract_features.py",
                         description=__doc__.split("\n\n")[2].strip())


@cli_main
def main(argv: Optional[Sequence[str]] = None) -> int:
    from arguments import parse_config
    from arguments.cli import one_line_warnings
    from features.pipeline import run_extract
    from scene.compute import check_compute

    cfg, _ = parse_config(build_parser(), argv)
    check_compute(None, cfg.extractor.device)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    with one_line_warnings():
        run_extract(cfg, log=print)
    return 0


if __name__ == "__main__":
    sys.exit(main())
