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

from utils.errors import cli_main


def build_parser() -> argparse.ArgumentParser:
    from arguments import config_parser
    from features.pipeline import DinoTrainConfig

    return config_parser(DinoTrainConfig, prog="dino_train.py", description=__doc__.split("\n\n")[2].strip())


@cli_main
def main(argv: Optional[Sequence[str]] = None) -> int:
    from arguments import parse_config
    from arguments.cli import one_line_warnings, set_torch_threads
    from features.pipeline import run_dino_train
    from scene.compute import check_compute

    cfg, _ = parse_config(build_parser(), argv)
    check_compute(cfg.field.backend, cfg.device)
    set_torch_threads(cfg.field.num_threads)
    with one_line_warnings():
        run_dino_train(cfg, log=print)
    return 0


if __name__ == "__main__":
    sys.exit(main())
