"""segment.py --everything on a capture with one GT object mask per view: quality of the instances and cost.

    python benchmarks/bench_everything.py --model output/maryRose --source ../shared/data/maryRose \
        --sam output/sam_like/maryRose --json everything.json

Quality (held-out views, every 8th): the instance that best matches the object, rendered alone (object-alone
protocol) and in the scene (in-scene protocol), mIoU against the GT masks; for every other instance, the
share of the object's GT area it covers in the in-scene instance map (max over the views); and whether
masks_consistent/ is consistent: the share of the training views where one instance id covers >= 90 % of the
object's GT mask. Cost, side by side (alternating, medians): one voting pass (the paper's rule, a binary mask
per training view) vs --everything without its file writing (proposals read, atoms, their label-map vote
pass, the instance search).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from arguments import ModelParams  # noqa: E402
from scene.model_folder import load_model  # noqa: E402
from scene.views import load_views  # noqa: E402
from segmentation.evaluate import score_view  # noqa: E402
from segmentation.labels import render_label_map  # noqa: E402
from utils.masks import open_mask_source, open_masks  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--source", default=str(ROOT.parent / "shared" / "data" / "maryRose"))
    ap.add_argument("--sam", required=True, help="SAM-like folder (benchmarks/sam_like.py)")
    ap.add_argument("--out", default=str(ROOT / "output" / "bench_everything"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    warnings.simplefilter("ignore")

    from segmentation.association import build_atom_views
    from segmentation.everything import find_instances
    from segmentation.pipeline import SegmentConfig, run_segmentation
    from segmentation.voting import accumulate_votes

    source = Path(args.source)
    params, g, _ = load_model(args.model)
    params = ModelParams(**{**params.__dict__, "source_path": str(source)})
    train = load_views(params, "train").cameras
    test = load_views(params, "test").cameras

    # --- quality: the real CLI path (files included) ---
    cfg = SegmentConfig(model_path=args.model, source_path=str(source), masks=args.sam, everything=True,
                        out=args.out, previews=2, gif_frames=0, backend="cpu", num_threads=args.threads,
                        progress=False, force=True)
    res = run_segmentation(cfg)
    labels = res.selection.labels
    inst = json.loads((Path(args.out) / "instances.json").read_text())["instances"]
    num = len(inst)
    gt_test = list(open_masks(source / "masks", test, fmt="binary").items())
    scores = {}
    for i in inst:
        lab = (labels == i["id"]).astype(np.int64)
        ious = []
        for cam, gt in gt_test:
            iou, _ = score_view(render_label_map(cam, g, lab, 1, "cpu", args.threads, "object"), gt, 1)
            ious.append(iou[0] if iou[0] is not None else 1.0)
        scores[i["id"]] = float(np.mean(ious))
    best = max(scores, key=scores.get)
    scene_ious, other_cover = [], {i["id"]: 0.0 for i in inst if i["id"] != best}
    for cam, gt in gt_test:
        lm = render_label_map(cam, g, labels, num, "cpu", args.threads, "scene")
        iou, _ = score_view((lm == best).astype(np.int32), gt, 1)
        scene_ious.append(iou[0] if iou[0] is not None else 1.0)
        area = max(1, int((gt > 0).sum()))
        for j in other_cover:
            other_cover[j] = max(other_cover[j], float(((lm == j) & (gt > 0)).sum()) / area)
    consistent = []
    gt_train = dict((c.image_name, m) for c, m in open_masks(source / "masks", train, fmt="binary").items())
    for png in sorted((Path(args.out) / "masks_consistent").iterdir()):
        ids = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(png))
        name = next(c.image_name for c in train if png.stem == Path(c.image_name).name)
        gt = gt_train[name] > 0
        if ids.shape != gt.shape or not gt.any():
            continue
        counts = np.bincount(ids[gt].ravel().astype(np.int64), minlength=num + 1)
        consistent.append(counts[best] / gt.sum())
    consistent = np.asarray(consistent)
    quality = {"instances": num, "best_instance": best, "best_gaussians": next(i["gaussians"] for i in inst if i["id"] == best),
               "object_alone_miou": scores[best], "in_scene_miou": float(np.mean(scene_ious)),
               "max_other_cover_of_gt": max(other_cover.values(), default=0.0),
               "views_where_best_covers_90pct": float((consistent >= 0.9).mean()) if len(consistent) else None,
               "all_instances_object_alone_miou": scores}
    print(f"{num} instances; best {best} ({quality['best_gaussians']:,} Gaussians): object-alone mIoU "
          f"{quality['object_alone_miou']:.3f}, in-scene {quality['in_scene_miou']:.3f}; largest share of the object's "
          f"GT covered by another instance {quality['max_other_cover_of_gt']:.3f}; masks_consistent: instance {best} "
          f"covers >= 90 % of the GT in {100 * quality['views_where_best_covers_90pct']:.0f} % of {len(consistent)} views")

    # --- cost, side by side ---
    cams = {c.image_name: c for c in train}

    def voting_pass() -> float:
        t = time.perf_counter()
        ms = open_masks(source / "masks", train, fmt="binary")
        accumulate_votes(g, ms.items(), 1, "cpu", args.threads, total=len(ms), progress=False)
        return time.perf_counter() - t

    def everything() -> float:
        t = time.perf_counter()
        ids: dict[str, list[int]] = {}
        props = open_mask_source(args.sam, train)

        def items():
            for cam, vp in props.items():
                ids[cam.image_name] = list(vp.ids)
                yield cam, vp

        avs, _ = build_atom_views(g, items(), set(), "cpu", args.threads, False, total=len(props))
        find_instances(g, avs, cams, ids)
        return time.perf_counter() - t

    voting_pass()
    rows = {"voting pass": [], "--everything (no file writing)": []}
    for _ in range(args.repeat):
        rows["voting pass"].append(voting_pass())
        rows["--everything (no file writing)"].append(everything())
    base = statistics.median(rows["voting pass"])
    cost = {}
    for name, ts in rows.items():
        med = statistics.median(ts)
        cost[name] = {"median_s": med, "all_s": ts, "ratio": med / base}
        print(f"  {name:<32} {med:7.2f} s  x{med / base:5.2f}")
    print(f"  full segment.py --everything run (with files): {res.summary['timings_s']['total']:.1f} s "
          f"({', '.join(f'{k} {v:.1f}' for k, v in res.summary['timings_s'].items() if k != 'total')})")
    if args.json:
        Path(args.json).write_text(json.dumps({"quality": quality, "cost": cost,
                                               "timings_s": res.summary["timings_s"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
