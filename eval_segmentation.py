#!/usr/bin/env python
"""Score a segmentation against ground-truth 2D masks on held-out views.

    python eval_segmentation.py -m MODEL --labels MODEL/segmentation/labels.npy --gt-masks GT [--split test]

The selected Gaussians are rendered as a mask inside the full scene (--render scene, default: other
Gaussians occlude them, as in the ground-truth masks of real photos) or alone (--render object: what a viewer
shows of extracted.ply) and compared with the ground truth per view: IoU and pixel accuracy, averaged into
mIoU / mAcc. Writes eval.json (keys miou, macc, render, views, ...) beside labels.npy unless --out says
otherwise.
"""
from __future__ import annotations

import argparse
import sys

from utils.errors import cli_main


def build_parser() -> argparse.ArgumentParser:
    from arguments import config_parser
    from segmentation.evaluate import EvalConfig

    return config_parser(EvalConfig, prog="eval_segmentation.py", description=__doc__.split("\n\n")[2].strip())


@cli_main
def main(argv: list[str] | None = None) -> int:
    from arguments import parse_config
    from arguments.cli import one_line_warnings
    from scene.compute import check_compute
    from segmentation.evaluate import run_evaluation

    cfg, _ = parse_config(build_parser(), argv)
    check_compute(cfg.backend, cfg.device)
    with one_line_warnings():
        result = run_evaluation(cfg, log=print)
    print(result.table())
    if result.miou is None:
        print(f"no labelled pixel in any ground truth or prediction; wrote {result.path}")
    else:
        print(f"mIoU {result.miou:.4f}  mAcc {result.macc:.4f}  over {len(result.views)} views "
              f"({cfg.render} protocol); wrote {result.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
