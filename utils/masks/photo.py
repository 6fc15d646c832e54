"""Proposals from the photos themselves, weight-free: superpixels, and GrabCut for a prompt's first mask.

Without SAM masks the only 2D evidence is the image. :class:`PhotoProposals` partitions each view's photo
into SLIC superpixels (scikit-image): regions that follow colour edges, which the association snaps the
rendered 3D selection to. A prompt's first mask comes from OpenCV's GrabCut: a box initialises it directly;
a point grows the superpixel it hits over neighbours of similar mean colour (scikit-image's region
adjacency graph), whose bounding box then initialises GrabCut with the point as sure foreground.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np

from utils.errors import UserError
from utils.masks.sources import Entry, ProposalMasks, ViewProposals

# SLIC runs on the photo shrunk to half its size (longest side at least SLIC_MIN_SIDE, at most SLIC_MAX_SIDE) and
# the partition is resized back nearest: superpixels describe objects, not pixels, so their number does not
# grow with the resolution. Half size is 3x faster (22 vs 66 ms per 256² view) with the same association
# quality on maryRose (benchmarks/seg_quality.py, photo completion K = 1 / 3 / 5 and the box prompt, object-alone
# mIoU within 0.001 of full-size SLIC).
SLIC_SCALE = 0.5
SLIC_MIN_SIDE = 96
SLIC_MAX_SIDE = 512
SLIC_SEGMENTS = 400
SLIC_COMPACTNESS = 10.0
# Region growing of a point prompt: neighbouring superpixels merge below this mean-colour distance (Lab).
GROW_LAB_DISTANCE = 12.0
GRABCUT_ITERATIONS = 5


def view_rgb(camera) -> np.ndarray:  # -> [H, W, 3] uint8, the view's photo at its resolution
    img = camera.load_image().permute(1, 2, 0).cpu().numpy()
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def superpixels(rgb: np.ndarray) -> np.ndarray:  # -> [H, W] int32 region ids 0..R-1
    """SLIC superpixels of an RGB image (computed at SLIC_SCALE of its size, see above; resized back nearest)."""
    from skimage.segmentation import slic

    h, w = rgb.shape[:2]
    longest = max(h, w)
    side = min(SLIC_MAX_SIDE, max(SLIC_SCALE * longest, min(longest, SLIC_MIN_SIDE)))
    s = min(1.0, side / longest)
    small = rgb if s == 1.0 else cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))),
                                            interpolation=cv2.INTER_AREA)
    seg = slic(small, n_segments=SLIC_SEGMENTS, compactness=SLIC_COMPACTNESS, start_label=0, channel_axis=-1)
    if seg.shape != (h, w):
        seg = cv2.resize(seg.astype(np.int32), (w, h), interpolation=cv2.INTER_NEAREST_EXACT)
    return seg.astype(np.int32)


class PhotoProposals(ProposalMasks):
    """Superpixels of every view's photo (views without an image are skipped)."""

    fmt = "photo"

    def __init__(self, cameras: Sequence, has_images: bool = True):
        if not has_images:
            raise UserError("no photos available (the cameras come from cameras.json): proposals from photos need "
                            "the source images; pass -s SOURCE or --masks with SAM masks")
        entries = [Entry(c, str(getattr(c, "image_path", "") or c.image_name)) for c in cameras]
        super().__init__(Path("<photos>"), entries, [], [])

    def _load(self, e: Entry) -> ViewProposals:
        return ViewProposals(e.camera, partition=superpixels(view_rgb(e.camera)), source=e.source)


def grabcut(rgb: np.ndarray, init: np.ndarray, rect: Optional[tuple[int, int, int, int]] = None) -> np.ndarray:
    """GrabCut of ``rgb`` from an initial trimap (cv2.GC_* values) or a rectangle; -> [H, W] bool foreground.

    rgb: [H, W, 3] uint8; init: [H, W] uint8; rect: (x, y, w, h) when initialising from a rectangle
    """
    mask = init.copy()
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)  # GrabCut's GMMs start from k-means on OpenCV's RNG: same input, same mask
    mode = cv2.GC_INIT_WITH_RECT if rect is not None else cv2.GC_INIT_WITH_MASK
    cv2.grabCut(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), mask, rect, bgd, fgd, GRABCUT_ITERATIONS, mode)
    return (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)


def _disc(shape: tuple[int, int], x: float, y: float, r: float) -> np.ndarray:
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return (xx - x) ** 2 + (yy - y) ** 2 <= r * r


def box_mask(rgb: np.ndarray, box: tuple[float, float, float, float],
             negatives: Sequence[tuple[float, float]] = ()) -> np.ndarray:  # [H, W] bool
    """The object in ``box`` (x0, y0, x1, y1: its edges in the view's continuous pixel frame) by GrabCut;
    negatives are sure background."""
    h, w = rgb.shape[:2]
    x0, y0 = max(0, int(np.floor(box[0]))), max(0, int(np.floor(box[1])))
    x1, y1 = min(w - 1, int(np.ceil(box[2])) - 1), min(h - 1, int(np.ceil(box[3])) - 1)
    init = np.zeros((h, w), np.uint8)
    if negatives:
        init[:] = cv2.GC_BGD
        init[y0:y1 + 1, x0:x1 + 1] = cv2.GC_PR_FGD
        r = max(2.0, 0.01 * max(h, w))
        for x, y in negatives:
            init[_disc((h, w), x, y, r)] = cv2.GC_BGD
        return grabcut(rgb, init)
    return grabcut(rgb, init, (x0, y0, x1 - x0 + 1, y1 - y0 + 1))


def point_mask(rgb: np.ndarray, positives: Sequence[tuple[float, float]],
               negatives: Sequence[tuple[float, float]] = ()) -> np.ndarray:  # [H, W] bool
    """The object under the positive points: superpixels of similar colour grown from the clicked ones
    (never across a negative point), then GrabCut inside their bounding box."""
    from skimage import graph

    h, w = rgb.shape[:2]
    seg = superpixels(rgb)
    rag = graph.rag_mean_color(cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.float64), seg, mode="distance")
    merged = graph.cut_threshold(seg, rag, GROW_LAB_DISTANCE, in_place=False)
    region = np.zeros((h, w), bool)
    for x, y in positives:
        region |= merged == merged[int(y), int(x)]
    for x, y in negatives:
        region &= merged != merged[int(y), int(x)]
    if region.mean() > 0.6:  # grew into the background: keep the clicked superpixels only
        region = np.isin(seg, [seg[int(y), int(x)] for x, y in positives])
    ys, xs = np.nonzero(region)
    pad = int(0.05 * max(h, w))
    x0, x1 = max(0, xs.min() - pad), min(w - 1, xs.max() + pad)
    y0, y1 = max(0, ys.min() - pad), min(h - 1, ys.max() + pad)
    init = np.full((h, w), cv2.GC_BGD, np.uint8)
    init[y0:y1 + 1, x0:x1 + 1] = cv2.GC_PR_BGD
    init[region] = cv2.GC_PR_FGD
    r = max(2.0, 0.01 * max(h, w))
    for x, y in positives:
        init[_disc((h, w), x, y, r)] = cv2.GC_FGD
    for x, y in negatives:
        init[_disc((h, w), x, y, r)] = cv2.GC_BGD
    return grabcut(rgb, init)
