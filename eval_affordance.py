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

from utils.errors import cli_main


def build_parser() -> argparse.ArgumentParser:
    from affordance.evaluate import AffordanceEvalConfig
    from arguments import config_parser

    return config_parser(AffordanceEvalConfig, prog="eval_affordance.py", description=__doc__.split("\n\n")[2].strip())


@cli_main
def main(argv: list[str] | None = None) -> int:
    from affordance.evaluate import run_eval
    from arguments import parse_config
    from arguments.cli import one_line_warnings
    from scene.compute import check_compute

    cfg, _ = parse_config(build_parser(), argv)
    check_compute(cfg.backend, cfg.device)
    with one_line_warnings():
        result = run_eval(cfg, log=print)
    print(f"wrote {result.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
