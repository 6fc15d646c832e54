#!/usr/bin/env python
"""Segment a trained 3DGS model from 2D masks by gradient voting.

    python segment.py -m MODEL --masks MASKS [--labels 3,7] [--views 0.1] [--out DIR]
    python segment.py -m MODEL --masks SAM_DIR --prompt IMG_0001:120,80       # SAM amg.py output + one click
    python segment.py -m MODEL --prompt-box IMG_0001:40,30,200,180            # only the photos + one box
    python segment.py                      # built-in demo on a generated scene (no data needed)

Each Gaussian sums, over the masked views, the alpha*T mass it puts on every mask label and on the
background; it joins the label with the largest mass (one label: inside mass > outside mass, the paper's
rule). Writes extracted.ply (or extracted_<label>.ply), deleted.ply, labels.npy, votes.npy, summary.json,
preview PNGs and views.gif into --out (default MODEL/segmentation); inputs are never modified.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, fields
from typing import Any

from arguments import nested
from segmentation.demo import DemoOptions
from segmentation.pipeline import SegmentConfig
from utils.errors import UserError, cli_main


@dataclass
class SegmentArgs:
    """segment.py's flags: the segmentation job's, and the demo's."""

    job: SegmentConfig = nested(SegmentConfig)
    demo_options: DemoOptions = nested(DemoOptions, "demo")


def build_parser() -> argparse.ArgumentParser:
    from arguments import config_parser

    return config_parser(SegmentArgs, prog="segment.py", description=__doc__.split("\n\n")[2].strip(),
                         usage="%(prog)s [-m MODEL --masks MASKS] [options]   (no arguments: built-in demo)")


@cli_main
def main(argv: list[str] | None = None) -> int:
    from arguments import parse_config
    from arguments.cli import one_line_warnings
    from scene.compute import check_compute

    args, _ = parse_config(build_parser(), argv)
    cfg = args.job
    check_compute(cfg.backend, cfg.device)
    with one_line_warnings():
        if args.demo_options.demo or not cfg.model_path:
            if not args.demo_options.demo and (cfg.masks or cfg.source_path or cfg.prompt or cfg.prompt_box):
                raise UserError("--masks/-s/--prompt given without -m/--model_path; pass the model folder too")
            return _demo(cfg, args.demo_options)
        return _segment(cfg)


def _segment(cfg: SegmentConfig) -> int:
    from segmentation.pipeline import format_summary, run_pick, run_segmentation

    if cfg.pick:
        info = run_pick(cfg, log=print)
        print(f"extracted {info.extracted:,} Gaussians of instance(s) {', '.join(map(str, info.instances))}; "
              f"deleted.ply keeps {info.deleted:,}")
        return 0
    result = run_segmentation(cfg, log=print)
    print(format_summary(result.summary))
    print(f"outputs in {result.out}: {', '.join(_grouped(result.outputs))}")
    return 0


def _grouped(names: list[str]) -> list[str]:
    """File names, with the files of a sub-folder shown as one entry (``masks_associated/ (60 files)``)."""
    out: list[str] = []
    folders: dict[str, int] = {}
    for n in names:
        if "/" in n:
            d = n.split("/", 1)[0] + "/"
            if d not in folders:
                out.append(d)
            folders[d] = folders.get(d, 0) + 1
        else:
            out.append(n)
    return [f"{n} ({folders[n]} files)" if n in folders else n for n in out]


def _demo(cfg: SegmentConfig, demo: DemoOptions) -> int:
    from segmentation.demo import run_demo

    defaults = SegmentConfig()
    overrides: dict[str, Any] = {f.name: getattr(cfg, f.name) for f in fields(SegmentConfig)
                                 if f.name in ("views", "undecided", "knn", "backend", "num_threads", "previews",
                                               "gif_frames", "progress", "force", "margin")}
    if cfg.margin is None:
        del overrides["margin"]
    overrides = {k: v for k, v in overrides.items()
                 if v != getattr(defaults, k) or k in ("progress", "force", "margin")}
    run_demo(cfg.out or "output/demo", demo.demo_objects, overrides)
    return 0


if __name__ == "__main__":
    sys.exit(main())
