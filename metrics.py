"""PSNR / SSIM (and LPIPS when its weights are available offline) of rendered views, like Inria's metrics.py.

    python metrics.py -m output/maryRose [output/fern ...]

Reads <model>/test/ours_<iter>/{renders,gt} written by render.py; prints the means and writes
<model>/results.json and <model>/per_view.json in Inria's format.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from utils.errors import cli_main


def build_parser() -> argparse.ArgumentParser:
    from arguments import config_parser
    from training.pipeline import MetricsConfig

    return config_parser(MetricsConfig, prog="metrics.py", description="Image metrics of rendered test views "
                         "(Inria's results.json).")


@cli_main
def main(argv: Optional[Sequence[str]] = None) -> int:
    from arguments import parse_config
    from training.pipeline import run_metrics

    cfg, _ = parse_config(build_parser(), argv)
    run_metrics(cfg, log=print)
    return 0


if __name__ == "__main__":
    sys.exit(main())
