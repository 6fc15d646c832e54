"""PSNR / SSIM (and LPIPS when its weights are available offline) of rendered views, like Inria's metrics.py.

    python metrics.py -m output/maryRose [output/fern ...]

Reads <model>/test/ours_<iter>/{renders,gt} written by render.py; prints the means and writes
<model>/results.json and <model>/per_view.json in Inria's format.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from utils.errors import ArgumentParser, cli_main
from utils.outputs import add_force_flag


@cli_main
def main(argv: Optional[Sequence[str]] = None) -> int:
    from training.evaluation import evaluate_model_folder, lpips_metric

    p = ArgumentParser(description="Image metrics of rendered test views (Inria's results.json).")
    p.add_argument("-m", "--model_paths", nargs="+", required=True, help="model folders (render.py run first)")
    p.add_argument("--split", default="test", choices=("test", "train"),
                   help="which rendered split to score (default: test; train writes results_train.json)")
    p.add_argument("--no_lpips", action="store_true", help="do not compute LPIPS even if available")
    add_force_flag(p)
    ns = p.parse_args(argv)

    lpips_fn, why = (None, "disabled by --no_lpips") if ns.no_lpips else lpips_metric()
    if lpips_fn is None:
        print(f"LPIPS skipped: {why}")
    for model_path in ns.model_paths:
        print(f"Scene: {model_path}")
        for m in evaluate_model_folder(model_path, ns.split, lpips_fn, ns.force):
            print(f"Method: {m.method}")
            for key in ("SSIM", "PSNR", "LPIPS"):
                if key in m.mean:
                    print(f"  {key:>5} : {m.mean[key]:>12.7f}")
            print(f"  views : {len(m.per_view['PSNR'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
