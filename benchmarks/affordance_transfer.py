"""Few-shot 2D -> 2D -> 3D label transfer (affordance.py's pipeline) on maryRose, as a stand-in.

No affordance data set and no DINO weights are available here, so maryRose's object masks play the annotations:
a 2-class labelling (background, object) of ``--num-sources`` training views is transferred to the other
training views with the weight-free ``classic`` extractor (NOT DINO) and voted onto the Gaussians. Not a test.

Reported (pooled per-class IoU, see affordance.evaluate):

* 2D transfer: the transferred label maps of the non-annotated training views vs their GT masks;
* 3D: the per-Gaussian labelling rendered into the held-out (--eval, every 8th) views vs their GT masks;
* for context, 3D from voting the annotated views' masks alone (undecided Gaussians propagated from their
  3D neighbours), and from voting every training view's GT mask (the upper bound transfer aims at);
* the same three labellings rendered into the non-annotated training views, where the model itself renders
  well (held-out views also measure novel-view reconstruction), plus per-view median IoUs.

    python benchmarks/affordance_transfer.py --source ../shared/data/maryRose --json aff.json
    python benchmarks/affordance_transfer.py --source ../shared/data/maryRose --model output/maryRose --json aff.json
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from utils.io import atomic_write_text  # noqa: E402

CLASSES = "background,object"


def train_model(source: str, model: Path, iterations: Optional[int]) -> dict[str, Any]:
    """train.py's library function: preset cpu, --eval, the data's 256 px."""
    from training.config import parse_train_args
    from training.trainer import run_train

    argv = ["-s", source, "-m", str(model), "-r", "1", "--eval", "--preset", "cpu", "--quiet"]
    if iterations:
        argv += ["--iterations", str(iterations)]
    cfg = parse_train_args(argv)
    res = run_train(cfg)
    return {"iterations": res.last_iteration, "gaussians": res.num_gaussians, "seconds": round(res.wall_time_s, 1),
            "test_psnr": {str(k): v.get("test", {}).get("psnr") for k, v in res.evaluations.items()}}


def pick(n: int, k: int) -> list[int]:
    """k indices spread evenly over n (centred)."""
    return [min(n - 1, int((i + 0.5) * n / k)) for i in range(k)]


def mask_map(cam: Any, masks: Path) -> np.ndarray:  # [H, W] int32: 0 background, 1 object
    from utils.masks import read_binary_mask

    return np.asarray(cam.prepare_mask(read_binary_mask(masks / f"{Path(cam.image_name).name}.png")), dtype=np.int32)


def vote_masks(gaussians: Any, cams: list, masks: Path, propagate: bool) -> np.ndarray:  # [N] int64
    from segmentation.voting import accumulate_votes, make_selection

    votes, _ = accumulate_votes(gaussians, ((c, mask_map(c, masks)) for c in cams), 1, "auto", total=len(cams),
                                progress=False)
    xyz = gaussians.get_xyz.detach().cpu().numpy()
    return make_selection(votes, xyz, 0.0, "propagate" if propagate else "keep").labels


def view_ious_3d(gaussians: Any, labels: np.ndarray, cams: list, masks: Path) -> list[float]:
    """Object IoU of every view separately (the pooled IoU hides whether a few views fail)."""
    from segmentation.labels import render_label_map

    out = []
    for cam in cams:
        gt = mask_map(cam, masks) > 0
        pred = render_label_map(cam, gaussians, np.where(labels > 0, labels, 0), 1) > 0
        out.append(float((gt & pred).sum() / max(1, (gt | pred).sum())))
    return out


def view_ious_2d(pred_dir: Path, names: list[str], masks: Path) -> list[float]:
    from utils.masks import read_binary_mask, read_label_png, resize_nearest

    out = []
    for n in names:
        gt = read_binary_mask(masks / f"{n}.png")
        pred = resize_nearest(np.asarray(read_label_png(pred_dir / f"{n}.png")), gt.shape[1], gt.shape[0]) > 0
        out.append(float((gt & pred).sum() / max(1, (gt | pred).sum())))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", default=str(ROOT.parent / "shared" / "data" / "maryRose"))
    p.add_argument("--model", default="", help="trained model folder to reuse (else one is trained)")
    p.add_argument("--model-out", default=str(ROOT / "output" / "bench_affordance_maryRose"),
                   help="where to train when --model is not given")
    p.add_argument("--iterations", type=int, default=0, help="training iterations (default: the cpu preset's)")
    p.add_argument("--num-sources", type=int, default=3, help="annotated training views (default 3)")
    p.add_argument("--k", type=int, default=5, help="neighbours of the k-NN vote (default 5)")
    p.add_argument("--out", default="", help="affordance.py output folder (default: a temporary folder)")
    p.add_argument("--json", required=True, help="results file")
    a = p.parse_args()

    from affordance.classes import parse_classes
    from affordance.evaluate import evaluate_folder, evaluate_rendered
    from affordance.pipeline import AffordanceConfig, run_affordance
    from scene.model_folder import load_model
    from scene.views import load_views

    source = Path(a.source).resolve()
    masks = source / "masks"
    if not masks.is_dir():
        raise SystemExit(f"{source}: no masks/ folder; pass --source with the maryRose folder")
    results: dict[str, Any] = {"source": str(source), "machine": platform.platform(), "extractor": "classic",
                               "classes": CLASSES.split(",")}
    if a.model:
        model = Path(a.model)
        results["training"] = {"reused": str(model)}
    else:
        model = Path(a.model_out)
        print(f"training {model} (preset cpu, --eval) ...", flush=True)
        results["training"] = train_model(str(source), model, a.iterations or None)
    params, gaussians, iteration = load_model(model)
    train_cams = load_views(params, "train", str(source)).cameras
    test_cams = load_views(params, "test", str(source)).cameras
    if not test_cams:
        raise SystemExit(f"{model}: trained without --eval; no held-out views to score")
    results.update(model=str(model), iteration=iteration, gaussians=len(gaussians),
                   train_views=len(train_cams), test_views=len(test_cams))

    chosen = [train_cams[i] for i in pick(len(train_cams), a.num_sources)]
    tmp = Path(tempfile.mkdtemp(prefix="aff_bench_"))
    try:
        src = tmp / "sources"
        (src / "labels").mkdir(parents=True)
        for cam in chosen:
            stem = Path(cam.image_name).name
            shutil.copy(cam.image_path, src / Path(cam.image_path).name)
            shutil.copy(masks / f"{stem}.png", src / "labels" / f"{stem}.png")   # 0/255 -> class 1 "object"
        out = Path(a.out) if a.out else tmp / "out"
        cfg = AffordanceConfig(model_path=str(model), sources=str(src), classes=CLASSES, k=a.k, out=str(out),
                               source_path=str(source), renders=4, progress=False)
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run = run_affordance(cfg, log=print)
        results["affordance_seconds"] = round(time.perf_counter() - t, 1)
        results["affordance_timings_s"] = run.summary["timings_s"]
        results["sources"] = [Path(c.image_name).name for c in chosen]
        classes = parse_classes(CLASSES)

        with warnings.catch_warnings():  # expected: test views have no 2D prediction, 128 px models get resized
            warnings.simplefilter("ignore")
            s2d = evaluate_folder(out / "labels_2d", masks, classes, exclude={c.image_name for c in chosen})
            s3d = evaluate_rendered(gaussians, run.labels, test_cams, masks, classes, progress=False)
            few = vote_masks(gaussians, chosen, masks, propagate=True)
            s_few = evaluate_rendered(gaussians, few, test_cams, masks, classes, progress=False)
            oracle = vote_masks(gaussians, train_cams, masks, propagate=False)
            s_all = evaluate_rendered(gaussians, oracle, test_cams, masks, classes, progress=False)
            others = [c for c in train_cams if c not in chosen]
            s_tr = [evaluate_rendered(gaussians, lab, others, masks, classes, progress=False)
                    for lab in (run.labels, few, oracle)]
            per_view = [view_ious_2d(out / "labels_2d", [Path(c.image_name).name for c in others], masks)] + \
                [view_ious_3d(gaussians, lab, test_cams, masks) for lab in (run.labels, few, oracle)] + \
                [view_ious_3d(gaussians, lab, others, masks) for lab in (run.labels, few, oracle)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    rows = [
        ("2D transfer, classic k-NN (non-annotated train views)", s2d),
        (f"3D: transferred maps of all {len(train_cams)} train views voted (held-out views)", s3d),
        (f"3D: the {len(chosen)} annotated views' masks only, voted + propagated (held-out)", s_few),
        (f"3D: GT masks of all {len(train_cams)} train views voted (upper bound, held-out)", s_all),
        ("3D transferred, rendered into the non-annotated train views", s_tr[0]),
        ("3D annotated views only, rendered into the non-annotated train views", s_tr[1]),
        ("3D all GT masks, rendered into the non-annotated train views", s_tr[2]),
    ]
    results["rows"] = [{"name": n, "images": len(s.images), "iou_background": s.iou()[0], "iou_object": s.iou()[1],
                        "recall_object": s.recall()[1], "mean_iou_all": s.mean_iou_all,
                        "median_view_iou_object": float(np.median(v)), "view_iou_object": [round(x, 4) for x in v]}
                       for (n, s), v in zip(rows, per_view)]
    results["2d_detail"] = s2d.to_json()
    results["3d_detail"] = s3d.to_json()
    lines = ["| setting | images | IoU background | IoU object | recall object | mean IoU | median view IoU object |",
             "|---|---|---|---|---|---|---|"]
    for r in results["rows"]:
        lines.append(f"| {r['name']} | {r['images']} | {r['iou_background']:.3f} | {r['iou_object']:.3f} | "
                     f"{r['recall_object']:.3f} | {r['mean_iou_all']:.3f} | {r['median_view_iou_object']:.3f} |")
    table = "\n".join(lines)
    results["table"] = table
    print(table)
    atomic_write_text(a.json, json.dumps(results, indent=2) + "\n")
    print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
