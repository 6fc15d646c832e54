"""Segmentation quality on a real capture with per-view masks, in both protocols.

Train (or reuse) a model with ``--eval``; name the object in the training views; score the selection on the
held-out views against their GT masks, **object-alone** (the selected Gaussians rendered by themselves, what a
viewer shows of extracted.ply) and **in-scene** (the selection rendered inside the full scene, occluded by
the rest). Rows:

- K in {1, 3, 5, 10, all} GT masks, the paper's rule (with / without propagation of unseen Gaussians), clean
  and noisy masks (each view eroded or dilated by 3 px at random);
- the same K masks completed from proposals (photo superpixels, and the SAM-like folder) through the 3D
  model (segment.py --complete; its default completes from SAM proposals always, from photos for one mask);
- a SAM-like folder (benchmarks/sam_like.py: ids shuffled per view, parts, background regions, merges) and one
  click on one training view; the photos and one box on that view (segment.py --prompt / --prompt-box).

    python benchmarks/seg_quality.py --source ../shared/data/maryRose --json seg_quality.json
    python benchmarks/seg_quality.py --model output/maryRose          # reuse a trained model (trained with -w)

Each training view is voted once (per-view votes kept in memory) and K-view results are sums of those; the
proposals of every view are cut into atoms and voted once per source, and completion rounds are sums of
those; the prompt rows run segment.py's library end to end.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from arguments import ModelParams  # noqa: E402
from scene.model_folder import load_model  # noqa: E402
from scene.views import load_views  # noqa: E402
from segmentation.evaluate import score_view  # noqa: E402
from segmentation.labels import render_label_map  # noqa: E402
from segmentation.voting import make_selection, vote_view  # noqa: E402
from utils.masks import open_masks  # noqa: E402

KS = (1, 3, 5, 10, "all")
COMPLETE_KS = (1, 3, 5)
PROTOCOLS = ("object", "scene")


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


def sam_like_folder(source: Path, out: Path, seed: int) -> Path:
    spec = importlib.util.spec_from_file_location("sam_like", ROOT / "benchmarks" / "sam_like.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["sam_like"] = mod
    spec.loader.exec_module(mod)
    if not (out / ".done").is_file():
        mod.make_folder(source / "images", source / "masks", out, seed=seed)
        (out / ".done").write_text("")
    return out


class Scorer:
    """IoU / accuracy of a selection on the held-out views, in both protocols."""

    def __init__(self, gaussians, gt_maps, backend: str, threads: int):
        self.g, self.gt, self.backend, self.threads = gaussians, gt_maps, backend, threads
        self.ms: list[float] = []

    def __call__(self, labels: np.ndarray) -> dict:
        t = time.perf_counter()
        out = {}
        for mode in PROTOCOLS:
            ious, accs = [], []
            for cam, lm in self.gt:
                pred = render_label_map(cam, self.g, labels, 1, self.backend, self.threads, mode)
                iou, acc = score_view(pred, lm, 1)
                ious.append(iou[0] if iou[0] is not None else 1.0)
                accs.append(acc)
            out[mode] = {"miou": float(np.mean(ious)), "macc": float(np.mean(accs))}
        self.ms.append(1000 * (time.perf_counter() - t) / len(self.gt))
        return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", default=str(ROOT.parent / "shared" / "data" / "maryRose"),
                    help="LLFF/COLMAP scene with a masks/ folder (one mask per view)")
    ap.add_argument("--model", default="", help="reuse this trained model folder (trained with --eval)")
    ap.add_argument("--work", default=str(ROOT / "output" / "seg_quality"), help="where to train / write")
    ap.add_argument("--train-args", default="--white_background",
                    help="extra train.py arguments (default: --white_background, right for maryRose, which is "
                         "shot on white: a black-background model scores mIoU 0.75 instead of 0.94; pass '' or "
                         "e.g. '--iterations 3000' for other scenes)")
    ap.add_argument("--sam", default="", help="SAM-like proposal folder (default: generated from the GT masks "
                                             "into WORK/sam_like with --sam-seed)")
    ap.add_argument("--sam-seed", type=int, default=0)
    ap.add_argument("--no-prompts", action="store_true", help="skip the prompt and completion rows")
    ap.add_argument("--json", default="", help="write every figure as JSON")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    warnings.simplefilter("ignore")

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
          f"masks in, {len(test_cams)} held-out views scored, protocols object-alone and in-scene")

    gt = open_masks(source / "masks", test_cams, fmt="binary")
    score = Scorer(gaussians, [(cam, lm) for cam, lm in gt.items()], args.backend, args.threads)
    train_masks = open_masks(source / "masks", train_cams, fmt="binary")
    train_maps = [(cam, lm) for cam, lm in train_masks.items()]

    # One voting pass per mask variant; per-view votes kept ([V, N, 2] float32).
    rng = np.random.default_rng(args.seed)
    per_view: dict[str, np.ndarray] = {}
    vote_ms: dict[str, float] = {}
    for variant in ("clean", "noisy"):
        rows = []
        t = time.perf_counter()
        with torch.no_grad():
            for cam, lm in train_maps:
                if variant == "noisy":
                    lm = noisy(lm, rng)
                rows.append(vote_view(cam, gaussians, lm, 1, args.backend, args.threads).numpy().astype(np.float32))
        vote_ms[variant] = 1000 * (time.perf_counter() - t) / len(rows)
        per_view[variant] = np.stack(rows)
    v = per_view["clean"].shape[0]

    results = []

    def report(row: dict) -> None:
        results.append(row)
        o, s = row["object"], row["scene"]
        print(f"{row['method']:<34} {str(row.get('K', '')):>4} {o['miou']:7.3f} {o['macc']:7.3f} {s['miou']:7.3f} "
              f"{s['macc']:7.3f} {row['selected']:9,d}", flush=True)

    print(f"\n{'method':<34} {'K':>4} {'obj mIoU':>8} {'mAcc':>6} {'scene mIoU':>10} {'mAcc':>5} {'selected':>9}")
    for variant in ("clean", "noisy"):
        for k in KS:
            kk = v if k == "all" else int(k)
            idx = spread(v, kk)
            votes = per_view[variant][idx].sum(0).astype(np.float64)
            for prop in (False, True):
                sel = make_selection(votes, xyz, undecided="propagate" if prop else "keep")
                report({"method": f"vote {variant}" + (" + propagate" if prop else ""), "masks": variant, "K": k,
                        "views_used": len(idx), "propagate": prop, "selected": int((sel.labels >= 1).sum()),
                        "undecided": sel.num_undecided, **score(sel.labels)})

    timing = {"train_s": train_s, "vote_ms_per_view": vote_ms["clean"],
              "vote_s_all_masks": vote_ms["clean"] * v / 1000}
    if not args.no_prompts:
        _association_rows(args, model_path, source, gaussians, xyz, train_cams, train_maps, per_view["clean"],
                          score, report, timing)

    timing.update({"eval_render_ms_per_view": float(np.mean(score.ms)), "total_s": time.perf_counter() - t0,
                   "peak_rss_mb": peak_rss_mb()})
    print(f"\ntiming: voting {timing['vote_ms_per_view']:.1f} ms/view, {timing['vote_s_all_masks']:.2f} s/scene "
          f"with all {v} masks; evaluation render {timing['eval_render_ms_per_view']:.1f} ms/view (both "
          f"protocols); training {train_s:.0f} s; total {timing['total_s']:.0f} s; peak RSS "
          f"{timing['peak_rss_mb']:.0f} MB")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": str(model_path), "gaussians": n, "iteration": iteration,
                                               "train_views": v, "test_views": len(score.gt), "rows": results,
                                               "timing": timing}, indent=2))
    return 0


def _association_rows(args, model_path: Path, source: Path, gaussians, xyz, train_cams, train_maps, clean_votes,
                      score, report, timing: dict) -> None:
    """Completion of K masks from photo / SAM-like proposals, and the prompt rows (segment.py's library)."""
    from segmentation.association import associate, build_atom_views
    from segmentation.pipeline import ASSOCIATED_MARGIN, SegmentConfig, run_segmentation
    from utils.masks import open_mask_source
    from utils.masks.photo import PhotoProposals

    work = Path(args.work)
    sam = Path(args.sam) if args.sam else sam_like_folder(source, work / "sam_like", args.sam_seed)
    v = len(train_cams)
    sources = {"photo": PhotoProposals(train_cams), "sam": open_mask_source(sam, train_cams)}
    for name, props in sources.items():
        t = time.perf_counter()
        atom_views, _ = build_atom_views(gaussians, props.items(), set(), args.backend, args.threads, False,
                                         total=len(props))
        timing[f"atoms_{name}_s"] = time.perf_counter() - t
        for k in COMPLETE_KS:
            idx = spread(v, k)
            seeds = {train_cams[i].image_name for i in idx}
            seed_votes = clean_votes[idx].sum(0).astype(np.float64)
            others = [a for a in atom_views if a.name not in seeds]
            t = time.perf_counter()
            res = associate(gaussians, seed_votes, others, 1, ASSOCIATED_MARGIN)
            sel = make_selection(res.votes, xyz, ASSOCIATED_MARGIN, "propagate")
            report({"method": f"masks + completion ({name})", "masks": "clean", "K": k, "views_used": k,
                    "views_associated": len(res.used_views), "rounds": len(res.rounds),
                    "seconds": time.perf_counter() - t, "selected": int((sel.labels >= 1).sum()), **score(sel.labels)})

    prompt_view = train_cams[0]
    lm = dict((c.image_name, m) for c, m in train_maps)[prompt_view.image_name]
    ys, xs = np.nonzero(lm > 0)
    d = cv2.distanceTransform((lm > 0).astype(np.uint8), cv2.DIST_L2, 5)
    cy, cx = np.unravel_index(int(d.argmax()), d.shape)
    stem = Path(prompt_view.image_name).name
    # prompts are in the image file's pixels; the mask is at the model's resolution (-r 2 halves it)
    from PIL import Image

    with Image.open(prompt_view.image_path) as im:
        sx, sy = im.size[0] / lm.shape[1], im.size[1] / lm.shape[0]
    box = (max(0, xs.min() - 5), max(0, ys.min() - 5), min(lm.shape[1] - 1, xs.max() + 5),
           min(lm.shape[0] - 1, ys.max() + 5))
    runs = {"SAM-like folder + 1 click": dict(masks=str(sam), prompt=[f"{stem}:{int((cx + 0.5) * sx)},"
                                                                        f"{int((cy + 0.5) * sy)}"]),
            "photos + 1 box": dict(prompt_box=[f"{stem}:{int(box[0] * sx)},{int(box[1] * sy)},"
                                               f"{int((box[2] + 1) * sx) - 1},{int((box[3] + 1) * sy) - 1}"])}
    for label, kw in runs.items():
        out = work / ("prompt_" + label.split()[0].lower())
        cfg = SegmentConfig(model_path=str(model_path), source_path=str(source), out=str(out), previews=0,
                            gif_frames=0, backend=args.backend, num_threads=args.threads, progress=False,
                            force=True, **kw)
        t = time.perf_counter()
        res = run_segmentation(cfg)
        labels = res.selection.labels
        report({"method": label, "K": 1, "prompt": kw, "seconds": time.perf_counter() - t,
                "chose": res.summary["masks"]["prompts"][0]["chose"],
                "views_associated": len(res.summary["association"]["views_associated"]),
                "selected": int((labels >= 1).sum()), **score(labels)})


if __name__ == "__main__":
    sys.exit(main())
