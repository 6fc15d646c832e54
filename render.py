"""Render a trained model's train/test views into Inria's folders (<split>/ours_<iter>/{renders,gt}).

    python render.py -m output/maryRose [--iteration N] [--skip_train] [--skip_test]

Scene settings (source folder, resolution, --eval split, background) come from <model>/cfg_args; flags
given here override them (e.g. -s when the source folder moved).
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from utils.errors import cli_main


def build_parser() -> argparse.ArgumentParser:
    from arguments import config_parser
    from training.pipeline import RenderConfig

    return config_parser(RenderConfig, prog="render.py", description="Render train/test views of a trained 3DGS "
                         "model (Inria's layout).")


@cli_main
def main(argv: Optional[Sequence[str]] = None) -> int:
    from arguments import parse_config
    from arguments.cli import set_torch_threads
    from scene.compute import check_compute
    from training.pipeline import run_render

    cfg, given = parse_config(build_parser(), argv)
    check_compute(cfg.pipe.backend, "cpu")
    set_torch_threads(cfg.pipe.num_threads)
    run_render(cfg, given, log=print if cfg.progress else (lambda s: None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
