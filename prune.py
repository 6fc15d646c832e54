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

import torch

from pruning.pipeline import PruneConfig, run_prune
from pruning.prune import DEFAULT_SWEEP, VerificationError
from segmentation.cli import check_compute
from utils.errors import ArgumentParser, cli_main
from utils.outputs import add_force_flag


def _thresholds(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-m", "--model_path", required=True,
                   help="trained model: Inria folder, splatfacto run folder or export PLY, or gsplat ckpt_*.pt / "
                        "result folder")
    p.add_argument("--out", default="", help="new output folder (default: <model_path>_pruned)")
    p.add_argument("--threshold", type=float, default=None,
                   help="also remove Gaussians with contribution < T x max contribution (lossy; the report "
                        "gives the cost). Default: lossless mode")
    p.add_argument("--sweep", action="store_true", help="write sweep.json and sweep.png (held-out PSNR vs %% "
                   "removed per threshold) without writing a model per threshold")
    p.add_argument("--sweep_thresholds", type=_thresholds, default=DEFAULT_SWEEP,
                   help=f"thresholds for --sweep (default: {','.join(f'{t:g}' for t in DEFAULT_SWEEP)})")
    p.add_argument("--iteration", type=int, default=-1, help="iteration to load (default: newest)")
    p.add_argument("-s", "--source_path", default="", help="scene folder (default: cfg_args' source_path)")
    p.add_argument("--backend", default="auto", help="rasterizer backend: auto | cpu | reference | inria | gsplat")
    p.add_argument("--threads", "--num_threads", dest="num_threads", type=int, default=0,
                   help="CPU rasterizer threads (0: all cores)")
    p.add_argument("--device", default="cpu", help="torch device holding the Gaussians")
    add_force_flag(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


@cli_main
def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    check_compute(args.backend, args.device)
    if args.num_threads > 0:
        torch.set_num_threads(args.num_threads)
    cfg = PruneConfig(model_path=args.model_path, out=args.out, threshold=args.threshold, sweep=args.sweep,
                      sweep_thresholds=args.sweep_thresholds, iteration=args.iteration, source_path=args.source_path,
                      backend=args.backend, num_threads=args.num_threads, force=args.force, device=args.device,
                      progress=not args.quiet)
    try:
        run_prune(cfg, log=print)
    except VerificationError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
