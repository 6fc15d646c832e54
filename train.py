"""Train a 3D Gaussian Splatting model (Inria's algorithm, CLI and output folder; runs on the CPU).

    python train.py -s ../shared/data/maryRose -m output/maryRose -r 1 --eval --preset cpu

The loop lives in training/trainer.py; this script only parses flags. Ctrl-C (or SIGTERM) stops after the
current iteration, saves chkpntN.pth and point_cloud/iteration_N/point_cloud.ply, and exits with status 130
(143); resume with --start_checkpoint <model>/chkpntN.pth (and the same flags). The model folder is staged
beside -m and swapped in when the run ends or is stopped that way (utils.outputs).
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
from typing import Optional, Sequence

from utils.errors import cli_main


def build_parser() -> argparse.ArgumentParser:
    from training.config import build_parser as train_parser

    return train_parser()


@cli_main
def main(argv: Optional[Sequence[str]] = None) -> int:
    import torch

    from arguments.cli import set_torch_threads
    from scene.compute import check_compute
    from training.config import parse_train_args
    from training.trainer import run_train

    cfg = parse_train_args(argv)
    check_compute(cfg.pipe.backend, cfg.device)
    logging.basicConfig(level=logging.WARNING if cfg.quiet else logging.INFO, format="%(message)s")
    set_torch_threads(cfg.pipe.num_threads)
    if cfg.detect_anomaly:
        torch.autograd.set_detect_anomaly(True)
    if not cfg.quiet:
        print(f"Optimizing {cfg.model.model_path} ({cfg.preset} preset, {cfg.opt.iterations} iterations)",
              flush=True)
    result = run_train(cfg)
    if result.interrupted:
        saved = " and ".join(str(p) for p in (result.checkpoints[-1:] + result.saved_plys[-1:]))
        how = "terminated (SIGTERM)" if result.stop_signal == signal.SIGTERM else "interrupted (SIGINT)"
        print(f"{how} at iteration {result.last_iteration}: saved {saved}; resume with "
              f"--start_checkpoint {result.checkpoints[-1]}", file=sys.stderr)
        return 143 if result.stop_signal == signal.SIGTERM else 130
    if not cfg.quiet:
        print(f"Training complete: {result.last_iteration} iterations, {result.num_gaussians} Gaussians, "
              f"{result.it_per_s:.2f} it/s, {result.wall_time_s:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
