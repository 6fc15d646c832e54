"""Segmentation quality on a real capture with per-view masks (the paper's protocol, issue 5).

Train (or reuse) a model with ``--eval``; vote with the masks of K training views; score the selection on the
held-out views (IoU / pixel accuracy against their GT masks). Rows: K in {1, 3, 5, 10, all}, with and without
propagation of unseen Gaussians, clean masks and noisy masks (each view eroded or dilated by 3 px at random).

    python benchmarks/seg_quality.py --source ../shared/data/maryRose --json seg_quality.json
    python benchmarks/seg_quality.py --model output/maryRose          # reuse a trained model (trained with -w)

Each training view is voted once (per-view votes kept in memory) and K-view results are sums of those, so the
whole table costs one voting pass per mask variant plus one evaluation render per held-out view and row.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from arguments import ModelParams  # noqa: E402
from scene.model_folder import load_model  # noqa: E402
from segmentation.evaluate import render_label_map, score_view  # noqa: E402
from segmentation.views import load_views  # noqa: E402
from segmentation.voting import make_selection, vote_view  # noqa: E402
from utils.masks import open_masks  # noqa: E402

KS = (1, 3, 5, 10, "all")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def spread(n: int, k: int) -> list[int]:
    """k indices spread evenly over range(n) (the first view always included)."""
    if k >= n:
        return list(range(n))
    return sorted({int(round(i * n / k)) for i in range(k)})


def noisy(label_map: np.ndarray, rng: np.random.Generator, px: int = 3) -> np.ndarray:
    """Erode or dilate the object by ``px`` pixels (chosen at random per view)."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))
    m = (label_map > 0).astype(np.uint8)
    m = cv2.erode(m, kernel) if rng.random() < 0.5 else cv2.dilate(m, kernel)
    return m.astype(label_map.dtype)


def train_model(source: Path, work: Path, extra: list[str]) -> Path:
    model = work / "model"
    cmd = [sys.executable, str(ROOT / "train.py"), "-s", str(source), "-m", str(model), "-r", "1", "--eval",
           "--preset", "cpu", *extra]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return model


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", default=str(ROOT.parent / "shared" / "data" / "maryRose"),
                    help="LLFF/COLMAP scene with a masks/ folder (one mask per view)")
    ap.add_argument("--model", default="", help="reuse this trained model folder (trained with --eval)")
    ap.add_argument("--work", default=str(ROOT / "output" / "seg_quality"), help="where to train if no --model")
    ap.add_argument("--train-args", default="--white_background",
                    help="extra train.py arguments (default: --white_background, right for maryRose, which is "
                         "shot on white: a black-background model scores mIoU 0.75 instead of 0.94; pass '' or "
                         "e.g. '--iterations 3000' for other scenes)")
    ap.add_argument("--json", default="", help="write every figure as JSON")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    source = Path(args.source)
    if not (source / "masks").is_dir():
        print(f"error: {source / 'masks'}: not found; --source needs a scene with one mask per view", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    train_s = 0.0
    if args.model:
        model_path = Path(args.model)
    else:
        model_path = train_model(source, Path(args.work), args.train_args.split())
        train_s = time.perf_counter() - t0

    params, gaussians, iteration = load_model(str(model_path))
    params = ModelParams(**{**params.__dict__, "source_path": str(source)})
    if not params.eval:
        print(f"error: {model_path}: trained without --eval, so no held-out views exist; retrain with --eval",
              file=sys.stderr)
        return 2
    train_cams = load_views(params, "train").cameras
    test_cams = load_views(params, "test").cameras
    n = gaussians.get_xyz.shape[0]
    xyz = gaussians.get_xyz.detach().cpu().numpy()
    print(f"model {model_path} (iteration {iteration}, {n:,} Gaussians); {len(train_cams)} train views with "
          f"masks in, {len(test_cams)} held-out views scored")

    gt = open_masks(source / "masks", test_cams, fmt="binary")
    gt_maps = [(cam, lm) for cam, lm in gt.items()]
    train_masks = open_masks(source / "masks", train_cams, fmt="binary")

    # One voting pass per mask variant; per-view votes kept ([V, N, 2] float32).
    rng = np.random.default_rng(args.seed)
    per_view: dict[str, np.ndarray] = {}
    vote_ms: dict[str, float] = {}
    for variant in ("clean", "noisy"):
        rows = []
        t = time.perf_counter()
        with torch.no_grad():
            for cam, lm in train_masks.items():
                if variant == "noisy":
                    lm = noisy(lm, rng)
                rows.append(vote_view(cam, gaussians, lm, 1, args.backend, args.threads).numpy().astype(np.float32))
        vote_ms[variant] = 1000 * (time.perf_counter() - t) / len(rows)
        per_view[variant] = np.stack(rows)
    v = per_view["clean"].shape[0]

    results = []
    eval_ms = []
    print(f"\n{'masks':>6} {'K':>4} {'propagate':>9} {'mIoU':>7} {'mAcc':>7} {'undecided':>9} {'selected':>9}")
    for variant in ("clean", "noisy"):
        for k in KS:
            kk = v if k == "all" else int(k)
            idx = spread(v, kk)
            votes = per_view[variant][idx].sum(0).astype(np.float64)
            for prop in (False, True):
                t = time.perf_counter()
                sel = make_selection(votes, xyz, undecided="propagate" if prop else "keep")
                decide_s = time.perf_counter() - t
                t = time.perf_counter()
                ious, accs = [], []
                for cam, lm in gt_maps:
                    pred = render_label_map(cam, gaussians, sel.labels, 1, args.backend, args.threads)
                    iou, acc = score_view(pred, lm, 1)
                    ious.append(iou[0] if iou[0] is not None else 1.0)
                    accs.append(acc)
                eval_ms.append(1000 * (time.perf_counter() - t) / len(gt_maps))
                row = {"masks": variant, "K": k, "views_used": len(idx), "propagate": prop,
                       "miou": float(np.mean(ious)), "macc": float(np.mean(accs)),
                       "undecided": sel.num_undecided, "selected": int((sel.labels >= 1).sum()),
                       "decide_s": decide_s}
                results.append(row)
                print(f"{variant:>6} {str(k):>4} {str(prop):>9} {row['miou']:7.3f} {row['macc']:7.3f} "
                      f"{row['undecided']:9d} {row['selected']:9d}", flush=True)

    timing = {"train_s": train_s, "vote_ms_per_view": vote_ms["clean"],
              "vote_s_all_masks": vote_ms["clean"] * v / 1000,
              "eval_render_ms_per_view": float(np.mean(eval_ms)), "total_s": time.perf_counter() - t0,
              "peak_rss_mb": peak_rss_mb()}
    print(f"\ntiming: voting {timing['vote_ms_per_view']:.1f} ms/view, {timing['vote_s_all_masks']:.2f} s/scene "
          f"with all {v} masks; evaluation render {timing['eval_render_ms_per_view']:.1f} ms/view; "
          f"training {train_s:.0f} s; total {timing['total_s']:.0f} s; peak RSS {timing['peak_rss_mb']:.0f} MB")
    all_clean = next(r for r in results if r["masks"] == "clean" and r["K"] == "all" and not r["propagate"])
    k5 = next(r for r in results if r["masks"] == "clean" and r["K"] == 5 and r["propagate"])
    print(f"targets: all masks mIoU {all_clean['miou']:.3f} (>= 0.90) mAcc {all_clean['macc']:.3f} (>= 0.97); "
          f"K=5 + propagation mIoU {k5['miou']:.3f} (goal >= 0.85)")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": str(model_path), "gaussians": n, "iteration": iteration,
                                               "train_views": v, "test_views": len(gt_maps), "rows": results,
                                               "timing": timing}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
