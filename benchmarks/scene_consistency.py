"""Does a capture's background move with its object? Epipolar check of SIFT matches inside vs outside masks.

    python benchmarks/scene_consistency.py --source ../shared/data/maryRose --masks ../shared/data/maryRose/masks
    python benchmarks/scene_consistency.py --source ../shared/data/maryRose --masks ../shared/data/maryRose/masks \
        --json consistency.json

For every pair of consecutive views (file-name order, both splits) the ratio-test SIFT matches are split into
object matches (keypoint inside the mask, dilated by ``--margin`` px, in both views) and background matches
(outside it in both), and each match is checked against the epipolar geometry of the dataset's poses
(Sampson distance < ``--max-epipolar-px``). When the object was moved, turned over or spun on a turntable
between shots and the poses were solved on the object, object matches agree and background matches do not:
then no static 3D scene can explain the background, and full-image novel-view PSNR is bounded by it
(train.py's ``--object_masks`` reconstructs the object alone). Prints one row per pair and the totals.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scene.triangulate import (TriangulationConfig, fundamental_matrix, ratio_matches,  # noqa: E402
                               sampson_distance, sift_features)
from utils.errors import UserError  # noqa: E402


def _run(ns: argparse.Namespace) -> dict:
    import cv2

    from scene.dataset_readers import read_scene
    from utils.masks import open_masks

    info = read_scene(ns.source, ns.images, ns.resolution, False, False)
    cams = sorted(info.train_cameras + info.test_cameras, key=lambda c: c.image_name)
    if ns.views:
        cams = cams[:ns.views]
    mset = open_masks(ns.masks, cams, fmt="binary")
    masks = {c.image_name: m > 0 for c, m in mset}
    missing = [c.image_name for c in cams if c.image_name not in masks]
    if missing:
        raise UserError(f"{ns.masks}: no mask for view {missing[0]} ({len(missing)} views without one)")
    cfg = TriangulationConfig()
    kernel = np.ones((2 * ns.margin + 1, 2 * ns.margin + 1), np.uint8)
    feats = []
    for cam in cams:
        xy, desc = sift_features(cam.prepare_image(cam.read_raw()), cfg)
        grown = cv2.dilate(masks[cam.image_name].astype(np.uint8), kernel) > 0
        px = np.clip(np.floor(xy).astype(np.int64), 0, [cam.width - 1, cam.height - 1])
        feats.append((xy, desc, grown[px[:, 1], px[:, 0]]))
    rows = []
    print(f"{'pair':<24} {'object: matches  agree':>22} {'background: matches  agree':>27}")
    for a in range(len(cams) - 1):
        b = a + 1
        (xa, da, ina), (xb, db, inb) = feats[a], feats[b]
        m = ratio_matches(da, db, ns.ratio)
        ok = np.zeros(0, bool)
        if len(m):
            d = sampson_distance(fundamental_matrix(cams[a], cams[b]), xa[m[:, 0]], xb[m[:, 1]])
            ok = d < ns.max_epipolar_px
        obj = ina[m[:, 0]] & inb[m[:, 1]] if len(m) else ok
        bg = ~ina[m[:, 0]] & ~inb[m[:, 1]] if len(m) else ok
        row = {"pair": [cams[a].image_name, cams[b].image_name],
               "object_matches": int(obj.sum()), "object_agree": int((ok & obj).sum()),
               "background_matches": int(bg.sum()), "background_agree": int((ok & bg).sum())}
        rows.append(row)
        frac = lambda k, n: f"{k / n:6.1%}" if n else "     -"  # noqa: E731
        print(f"{row['pair'][0] + '-' + row['pair'][1]:<24} {row['object_matches']:>14} "
              f"{frac(row['object_agree'], row['object_matches'])} {row['background_matches']:>19} "
              f"{frac(row['background_agree'], row['background_matches'])}")
    tot = {k: sum(r[k] for r in rows) for k in ("object_matches", "object_agree", "background_matches",
                                                  "background_agree")}
    ro = tot["object_agree"] / max(tot["object_matches"], 1)
    rb = tot["background_agree"] / max(tot["background_matches"], 1)
    print(f"total: object {tot['object_agree']}/{tot['object_matches']} agree with the poses ({ro:.1%}), "
          f"background {tot['background_agree']}/{tot['background_matches']} ({rb:.1%})")
    return {"source": ns.source, "masks": ns.masks, "views": len(cams), "pairs": rows, **tot,
            "object_agree_rate": ro, "background_agree_rate": rb}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--source", required=True, help="scene folder (COLMAP / LLFF)")
    p.add_argument("--masks", required=True, help="folder of binary object masks, one per view")
    p.add_argument("--images", default="images")
    p.add_argument("-r", "--resolution", type=int, default=-1)
    p.add_argument("--margin", type=int, default=3, help="mask dilation (px) keeping silhouette edges out "
                                                         "of the background (default: 3)")
    p.add_argument("--ratio", type=float, default=0.75, help="Lowe ratio (default: 0.75)")
    p.add_argument("--max-epipolar-px", type=float, default=1.5)
    p.add_argument("--views", type=int, default=0, help="only the first N views (default: all)")
    p.add_argument("--json", help="write the figures as JSON")
    ns = p.parse_args(argv)
    try:
        out = _run(ns)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if ns.json:
        tmp = Path(ns.json).with_suffix(".tmp")
        tmp.write_text(json.dumps(out, indent=1))
        tmp.replace(ns.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
