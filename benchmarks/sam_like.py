"""Make SAM-automatic-mask-generator-like folders from a scene with one GT object mask per view.

No SAM weights exist on these machines, so the segmentation benchmarks and tests need stand-ins that behave
like what users bring from SAM's ``scripts/amg.py``: per image a folder ``<stem>/<k>.png`` (0/255) plus
``metadata.csv`` (amg's columns), where ``k`` is assigned per image, masks overlap and come at several
granularities. Per view this generator writes, each with independently jittered edges:

- every object whole (left out in ``--p-missing`` of the views: only its parts then); the GT masks are binary
  (one object) or id PNGs (0 = none, one id per object),
- the object in parts: connected pieces of a colour clustering inside the object, and a spatial split,
- background regions: connected pieces of a colour + position clustering of the rest of the image,
  and in ``--p-merge`` of the views one of them merged with the object (an under-segmentation),
- a few small spurious blobs anywhere,

then shuffles the ids of that view. ``metadata.csv`` has amg's header; ``predicted_iou`` and
``stability_score`` are random numbers in SAM's usual range (they carry no information here).

    python benchmarks/sam_like.py --images ../shared/data/maryRose/images --masks ../shared/data/maryRose/masks \
        --out output/sam_like/maryRose
"""
from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np

AMG_HEADER = ("id,area,bbox_x0,bbox_y0,bbox_w,bbox_h,point_input_x,point_input_y,predicted_iou,"
              "stability_score,crop_box_x0,crop_box_y0,crop_box_w,crop_box_h").split(",")


@dataclass
class SamLikeConfig:
    """How SAM-like the proposals are (defaults: realistic, not adversarial)."""

    jitter_px: float = 1.5        # amplitude of the smooth boundary noise, px (at 256 px; scales with size)
    jitter_corr_px: float = 6.0   # correlation length of that noise, px
    object_parts: int = 3         # colour clusters inside the object (connected pieces become parts)
    background_clusters: int = 5  # colour + position clusters of the rest of the image
    min_area_frac: float = 0.004  # pieces smaller than this fraction of the image are dropped
    p_missing: float = 0.1        # probability that a view has no whole-object mask (parts only)
    p_merge: float = 0.2          # probability that a view has the object merged with a background region
    spurious: int = 2             # small random blobs per view (0..spurious)


@dataclass
class Proposal:
    mask: np.ndarray   # [H, W] bool
    kind: str          # "whole" | "part" | "background" | "merged" | "spurious" (not written to disk)


def _jitter(mask: np.ndarray, rng: np.random.Generator, amp: float, corr: float) -> np.ndarray:
    """The mask with its boundary moved by smooth noise of about ``amp`` px (signed distance + noise > 0)."""
    if amp <= 0 or not mask.any() or mask.all():
        return mask.copy()
    m = mask.astype(np.uint8)
    inside = cv2.distanceTransform(m, cv2.DIST_L2, 3)
    outside = cv2.distanceTransform(1 - m, cv2.DIST_L2, 3)
    sdf = np.where(mask, inside - 0.5, 0.5 - outside).astype(np.float32)
    noise = rng.normal(size=mask.shape).astype(np.float32)
    k = max(3, int(corr * 3) | 1)
    noise = cv2.GaussianBlur(noise, (k, k), corr)
    noise *= amp / max(float(noise.std()), 1e-6)
    return (sdf + noise) > 0


def _clean(mask: np.ndarray, scale: float) -> np.ndarray:
    """Morphological open + close: SAM masks are solid regions, not speckle."""
    r = max(1, int(round(2 * scale)))
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    m = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, k)
    return cv2.morphologyEx(m, cv2.MORPH_CLOSE, k).astype(bool)


def _pieces(label_map: np.ndarray, valid: np.ndarray, min_area: int) -> list[np.ndarray]:
    """Connected components of every label of ``label_map`` inside ``valid`` with >= min_area pixels."""
    out = []
    for lab in np.unique(label_map[valid]):
        m = ((label_map == lab) & valid).astype(np.uint8)
        n, cc = cv2.connectedComponents(m, connectivity=8)
        for i in range(1, n):
            piece = cc == i
            if piece.sum() >= min_area:
                out.append(piece)
    return out


def _kmeans_labels(features: np.ndarray, k: int, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans

    k = max(1, min(k, len(features)))
    return KMeans(n_clusters=k, n_init=2, random_state=seed).fit_predict(features)


def view_proposals(image: np.ndarray, gt: np.ndarray, rng: np.random.Generator,
                   cfg: SamLikeConfig = SamLikeConfig()) -> list[Proposal]:
    """SAM-like proposals of one view.

    image: np.ndarray  # [H, W, 3] uint8 RGB
    gt:    np.ndarray  # [H, W] bool (one object) or int (object ids, 0 = none): the objects
    """
    h, w = gt.shape
    scale = max(h, w) / 256.0
    amp, corr = cfg.jitter_px * scale, cfg.jitter_corr_px * scale
    min_area = max(4, int(cfg.min_area_frac * h * w))
    smooth = cv2.GaussianBlur(image, (0, 0), 2.5 * scale)  # regions, not texture: SAM parts are coherent
    lab = cv2.cvtColor(smooth, cv2.COLOR_RGB2LAB).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    seed = int(rng.integers(1 << 30))
    props: list[Proposal] = []
    objects = [gt > 0] if gt.dtype == bool else [gt == i for i in np.unique(gt) if i > 0]

    for obj in objects:
        if obj.sum() < min_area:
            continue
        if rng.random() >= cfg.p_missing:
            props.append(Proposal(obj, "whole"))
        # parts: colour clusters inside the object (SAM splits along colour edges: bands, lid, handle)
        sel = obj.ravel()
        pos = 0.5 * 255.0 / max(h, w)  # a little position: parts stay compact
        feats = np.concatenate([lab.reshape(-1, 3), xx.reshape(-1, 1) * pos, yy.reshape(-1, 1) * pos], 1)[sel]
        labels = np.full(h * w, -1, np.int64)
        labels[sel] = _kmeans_labels(feats, cfg.object_parts, seed)
        props += [Proposal(_clean(p, scale), "part") for p in _pieces(labels.reshape(h, w), obj, min_area)
                  if p.sum() < 0.9 * obj.sum()]
        # and a spatial split along the object's main axis (halves)
        ys, xs = np.nonzero(obj)
        pts = np.stack([xs, ys], 1).astype(np.float64)
        centre = pts.mean(0)
        axis = np.linalg.svd(pts - centre, full_matrices=False)[2][0]
        side = ((np.stack([xx, yy], -1) - centre) @ axis) > 0
        for half in (obj & side, obj & ~side):
            if half.sum() >= min_area:
                props.append(Proposal(half, "part"))

    any_obj = np.any(objects, axis=0) if objects else np.zeros((h, w), bool)
    rest = ~cv2.dilate(any_obj.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    if rest.sum() >= min_area:
        sel = rest.ravel()
        pos = 255.0 / max(h, w)  # position weight: regions stay compact
        feats = np.concatenate([lab.reshape(-1, 3), xx.reshape(-1, 1) * pos, yy.reshape(-1, 1) * pos], 1)[sel]
        labels = np.full(h * w, -1, np.int64)
        labels[sel] = _kmeans_labels(feats, cfg.background_clusters, seed + 1)
        bg = [Proposal(_clean(p, scale), "background") for p in _pieces(labels.reshape(h, w), rest, min_area)]
        props += bg
        for obj in objects:
            if bg and obj.any() and rng.random() < cfg.p_merge:
                # merge the object with a background region that touches it
                ring = cv2.dilate(obj.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool) & ~obj
                touching = [b for b in bg if (b.mask & ring).any()]
                if touching:
                    pick = touching[int(rng.integers(len(touching)))]
                    props.append(Proposal(obj | pick.mask, "merged"))

    for _ in range(int(rng.integers(cfg.spurious + 1))):
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        ax, ay = rng.uniform(3, 12) * scale, rng.uniform(3, 12) * scale
        blob = ((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2 <= 1.0
        if blob.sum() >= 4:
            props.append(Proposal(blob, "spurious"))

    out = []
    for p in props:
        m = _jitter(p.mask, rng, amp, corr)
        if m.sum() >= 4:
            out.append(Proposal(m, p.kind))
    order = rng.permutation(len(out))  # ids mean nothing across views
    return [out[i] for i in order]


def write_view(folder: Path, proposals: Sequence[Proposal], rng: np.random.Generator) -> None:
    """``folder/<k>.png`` (0/255, like amg's ``mask * 255``) and ``metadata.csv`` with amg's header."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for k, p in enumerate(proposals):
        cv2.imwrite(str(folder / f"{k}.png"), p.mask.astype(np.uint8) * 255)
        ys, xs = np.nonzero(p.mask)
        x0, y0 = int(xs.min()), int(ys.min())
        i = int(rng.integers(len(xs)))
        h, w = p.mask.shape
        rows.append([k, int(p.mask.sum()), x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1,
                     float(xs[i]) + 0.5, float(ys[i]) + 0.5, round(float(rng.uniform(0.86, 1.0)), 6),
                     round(float(rng.uniform(0.92, 1.0)), 6), 0, 0, w, h])
    with open(folder / "metadata.csv", "w", newline="") as f:
        wr = csv.writer(f, lineterminator="\n")
        wr.writerow(AMG_HEADER)
        wr.writerows(rows)


def make_folder(images: Path, masks: Path, out: Path, seed: int = 0, cfg: SamLikeConfig = SamLikeConfig(),
                names: Optional[Sequence[str]] = None) -> dict[str, list[str]]:
    """Write a SAM-like folder for every image with a mask (or the stems in ``names``).
    Returns {stem: kinds of its proposals in id order} (ground truth of the generator, for tests)."""
    from PIL import Image

    kinds: dict[str, list[str]] = {}
    stems = sorted(p.stem for p in masks.iterdir() if p.suffix.lower() == ".png")
    for i, stem in enumerate(stems):
        if names is not None and stem not in names:
            continue
        img_path = next((p for p in images.iterdir() if p.stem == stem), None)
        if img_path is None:
            continue
        image = np.asarray(Image.open(img_path).convert("RGB"))
        raw = np.asarray(Image.open(masks / f"{stem}.png"))
        raw = raw[..., 0] if raw.ndim == 3 else raw
        vals = np.unique(raw)
        gt = raw > 127 if set(vals.tolist()) <= {0, 255} else raw.astype(np.int64)  # binary or object ids
        if gt.shape != image.shape[:2]:
            gt = cv2.resize(gt.astype(np.uint8), image.shape[1::-1], interpolation=cv2.INTER_NEAREST).astype(gt.dtype)
        rng = np.random.default_rng([seed, i])
        props = view_proposals(image, gt, rng, cfg)
        write_view(out / stem, props, rng)
        kinds[stem] = [p.kind for p in props]
    return kinds


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", required=True, help="folder of the scene's images")
    ap.add_argument("--masks", required=True, help="folder of GT object masks (<stem>.png: 0/255, or object ids)")
    ap.add_argument("--out", required=True, help="SAM-like folder to write (<stem>/<k>.png + metadata.csv)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--p-missing", type=float, default=SamLikeConfig.p_missing)
    ap.add_argument("--p-merge", type=float, default=SamLikeConfig.p_merge)
    ap.add_argument("--jitter", type=float, default=SamLikeConfig.jitter_px)
    a = ap.parse_args(argv)
    cfg = SamLikeConfig(jitter_px=a.jitter, p_missing=a.p_missing, p_merge=a.p_merge)
    kinds = make_folder(Path(a.images), Path(a.masks), Path(a.out), a.seed, cfg)
    n = sum(len(v) for v in kinds.values())
    print(f"wrote {len(kinds)} views, {n} masks ({n / max(1, len(kinds)):.1f} per view) to {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
