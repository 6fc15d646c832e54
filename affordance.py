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

from utils.errors import cli_main


def build_parser() -> argparse.ArgumentParser:
    from affordance.pipeline import AffordanceConfig
    from arguments import config_parser

    return config_parser(AffordanceConfig, prog="affordance.py", description=__doc__.split("\n\n")[2].strip(),
                         epilog=__doc__.split("\n\n")[3].strip())


@cli_main
def main(argv: list[str] | None = None) -> int:
    from affordance.pipeline import format_summary, run_affordance
    from arguments import parse_config
    from arguments.cli import one_line_warnings
    from scene.compute import check_compute

    cfg, _ = parse_config(build_parser(), argv)
    check_compute(cfg.backend, cfg.device)
    with one_line_warnings():
        result = run_affordance(cfg, log=print)
    print(format_summary(result.summary))
    print(f"outputs in {result.out}: {', '.join(result.outputs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
