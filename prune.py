"""Prune a trained model: drop the Gaussians that contribute nothing to any training view, provably losslessly.

    python prune.py -m output/garden                      # lossless: every training render moves by < 1/510
    python prune.py -m output/garden --threshold 1e-4     # also drop contribution < 1e-4 x max; reports the cost
    python prune.py -m output/garden --sweep              # plus sweep.json / sweep.png: % removed vs held-out PSNR

Writes a new Inria model folder (default <MODEL>_pruned) with prune_report.json; the input is never touched.
Exit codes: 0 ok, 1 the lossless guarantee could not be verified (nothing written) or an internal error, 2 bad
input, 130/143 interrupted (nothing written).
Why the guarantee holds (and the one subtle case it has to repair) is explained in pruning/prune.py.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from utils.errors import cli_main


def build_parser() -> argparse.ArgumentParser:
    from arguments import config_parser
    from pruning.pipeline import PruneConfig

    return config_parser(PruneConfig, prog="prune.py", description=__doc__)


@cli_main
def main(argv: Optional[Sequence[str]] = None) -> int:
    from arguments import parse_config
    from arguments.cli import set_torch_threads
    from pruning.pipeline import run_prune
    from pruning.prune import VerificationError
    from scene.compute import check_compute

    cfg, _ = parse_config(build_parser(), argv)
    check_compute(cfg.backend, cfg.device)
    set_torch_threads(cfg.num_threads)
    try:
        run_prune(cfg, log=print)
    except VerificationError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
