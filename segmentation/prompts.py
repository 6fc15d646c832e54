"""Prompts that name the object in one view: points (positive / negative) and boxes, and their first mask.

Coordinates are the image FILE's pixels, what a user sees when opening the photo (column x, row y, from the
top-left pixel 0, 0); they are scaled to the view's resolution and, for distorted cameras, moved through the
same undistortion as the image. A prompt's first mask:

- from SAM proposals: the proposals containing every positive point and no negative one and covering less
  than half of the view (a region that large is background), up to ``MAX_CANDIDATES`` of the largest (a box:
  the proposal whose bounding box overlaps the box best). Each candidate is voted alone and rendered into
  the views nearest to the prompt's; its *multi-view consistency* is how well those views' proposals explain
  the render (segmentation.association.consistency). Of the candidates within ``CONSISTENT_SHARE`` of the most
  consistent, ``granularity="whole"`` takes the largest, ``"part"`` the smallest. So a mask that merged
  the object with a piece of background in the prompt view (SAM does that) loses to the object itself,
  which other views confirm;
- from the photo (no SAM folder): GrabCut, initialised by the box, or by the colour region grown from the
  clicked superpixels (utils.masks.photo).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from utils.errors import UserError
from utils.masks import ViewProposals, match_key

GRANULARITIES = ("whole", "part")
BACKGROUND_FRACTION = 0.5   # a proposal covering at least this much of the view is background, not an object
MIN_BOX_OVERLAP = 0.3       # a SAM proposal must overlap a box prompt at least this much (IoU of boxes)
CONSISTENT_SHARE = 0.9      # candidates this close to the most consistent one compete on size

_NUM = r"\s*([+-]?\d+(?:\.\d*)?)\s*"


@dataclass
class Prompt:
    """Everything prompted on one view, in the image file's pixels."""

    view: str                                                      # as the user typed it
    points: list[tuple[float, float]] = field(default_factory=list)      # positive
    negatives: list[tuple[float, float]] = field(default_factory=list)
    box: Optional[tuple[float, float, float, float]] = None        # x0, y0, x1, y1 (inclusive pixels)

    def describe(self) -> str:
        parts = [f"+({x:g},{y:g})" for x, y in self.points] + [f"-({x:g},{y:g})" for x, y in self.negatives]
        if self.box:
            parts.append("box({:g},{:g},{:g},{:g})".format(*self.box))
        return f"{self.view}: " + " ".join(parts)


def _split(text: str, flag: str, n: int) -> tuple[str, list[float]]:
    view, sep, coords = text.rpartition(":")
    m = re.fullmatch(",".join([_NUM] * n), coords) if sep else None
    if not view or m is None:
        example = "IMG_0001:120,80" if n == 2 else "IMG_0001:40,30,200,180"
        raise UserError(f"{flag} {text!r}: expected VIEW:{'X,Y' if n == 2 else 'X0,Y0,X1,Y1'} in the photo's "
                        f"pixels, e.g. {flag} {example}")
    return view.strip(), [float(v) for v in m.groups()]


def parse_prompts(points: Sequence[str] = (), negatives: Sequence[str] = (), boxes: Sequence[str] = ()
                  ) -> list[Prompt]:
    """``--prompt VIEW:X,Y`` / ``--negative VIEW:X,Y`` / ``--prompt-box VIEW:X0,Y0,X1,Y1`` -> one Prompt per view."""
    by_view: dict[str, Prompt] = {}

    def get(view: str) -> Prompt:
        return by_view.setdefault(match_key(view), Prompt(view))

    for t in points:
        v, (x, y) = _split(t, "--prompt", 2)
        get(v).points.append((x, y))
    for t in negatives:
        v, (x, y) = _split(t, "--negative", 2)
        get(v).negatives.append((x, y))
    for t in boxes:
        v, (x0, y0, x1, y1) = _split(t, "--prompt-box", 4)
        if x1 < x0 or y1 < y0:
            raise UserError(f"--prompt-box {t!r}: X1,Y1 must be right of and below X0,Y0")
        p = get(v)
        if p.box is not None:
            raise UserError(f"--prompt-box: two boxes on view {v}; give one box per view")
        p.box = (x0, y0, x1, y1)
    for p in by_view.values():
        if not p.points and p.box is None:
            raise UserError(f"--negative {p.view}:...: a negative point needs a --prompt or --prompt-box on the "
                            "same view")
    return list(by_view.values())


def find_view(prompt: Prompt, cameras: Sequence[Any], other_names: Sequence[str] = ()) -> Any:
    """The camera a prompt names (matched like masks: by image stem, case-insensitive)."""
    key = match_key(prompt.view)
    for cam in cameras:
        if match_key(cam.image_name) == key:
            return cam
    if any(match_key(n) == key for n in other_names):
        raise UserError(f"prompt view {prompt.view!r} is not in the voted split (held out by --eval); prompt a "
                        "training view or pass --split all")
    shown = ", ".join(c.image_name for c in cameras[:3])
    raise UserError(f"prompt view {prompt.view!r}: no such view (views are named after the image files, e.g. "
                    f"{shown}); pass VIEW as an image file name")


def file_size(camera: Any, fallback: Optional[tuple[int, int]] = None) -> tuple[int, int]:
    """(width, height) of the view's image file (the frame prompt coordinates are given in)."""
    path = getattr(camera, "image_path", None)
    if path:
        from utils.image_io import read_image_size

        return read_image_size(path)
    return fallback or (int(camera.width), int(camera.height))


def check_inside(camera: Any, pts: Sequence[tuple[float, float]], size: tuple[int, int], what: str,
                 prompt: Prompt) -> None:
    """Image-file pixel indices must lie in the image: one clear line otherwise."""
    w, h = size
    for x, y in pts:
        if not (0 <= x < w and 0 <= y < h):
            raise UserError(f"{what} {prompt.view}:{x:g},{y:g}: outside the {w}x{h} image of view "
                            f"{camera.image_name}; pass pixel coordinates of the photo (0 <= X < {w}, 0 <= Y < {h})")


def to_view_frame(camera: Any, pts: Sequence[tuple[float, float]], size: tuple[int, int]
                  ) -> list[tuple[float, float]]:
    """Continuous image-file coordinates (pixel i spans [i, i + 1)) -> the view's continuous pixel frame:
    scaled to the view's resolution and, for a distorted camera, undistorted like its image."""
    w, h = size
    sx, sy = camera.width / w, camera.height / h
    out = np.array([[x * sx, y * sy] for x, y in pts], dtype=np.float64).reshape(-1, 2)
    dist = getattr(camera, "distortion", None)
    if dist is not None and len(out):
        import cv2

        # OpenCV puts pixel centres at integers: shift by 0.5 around the call (as the undistortion maps do)
        K = np.array([[camera.fx, 0.0, camera.cx - 0.5], [0.0, camera.fy, camera.cy - 0.5], [0.0, 0.0, 1.0]])
        und = cv2.undistortPoints((out - 0.5).reshape(-1, 1, 2), K, np.asarray(dist.coeffs, np.float64), P=K)
        out = und.reshape(-1, 2) + 0.5
    return [(float(x), float(y)) for x, y in out]


def prompt_in_view(prompt: Prompt, camera: Any, size: tuple[int, int]
                   ) -> tuple[list[tuple[float, float]], list[tuple[float, float]],
                              Optional[tuple[float, float, float, float]]]:
    """(positive points, negative points, box) of ``prompt`` in the view's continuous pixel frame."""
    check_inside(camera, prompt.points, size, "--prompt", prompt)
    check_inside(camera, prompt.negatives, size, "--negative", prompt)
    box = None
    if prompt.box is not None:
        x0, y0, x1, y1 = prompt.box
        check_inside(camera, [(x0, y0), (x1, y1)], size, "--prompt-box", prompt)
        (a, b), (c, d) = to_view_frame(camera, [(x0, y0), (x1 + 1.0, y1 + 1.0)], size)
        box = (a, b, c, d)
    centre = [(x + 0.5, y + 0.5) for x, y in prompt.points]
    neg = [(x + 0.5, y + 0.5) for x, y in prompt.negatives]
    return to_view_frame(camera, centre, size), to_view_frame(camera, neg, size), box


@dataclass
class Seed:
    """A prompt's first mask on its view."""

    camera: Any
    mask: np.ndarray          # [H, W] bool at the view's resolution
    description: str          # what was chosen and why (logged, stored in summary.json)


def _pixel(camera: Any, x: float, y: float) -> tuple[int, int]:
    return min(camera.width - 1, max(0, int(x))), min(camera.height - 1, max(0, int(y)))


def _box_iou(mask: np.ndarray, box: tuple[float, float, float, float]) -> float:
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return 0.0
    ax0, ay0, ax1, ay1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    bx0, by0, bx1, by1 = box
    iw = max(0.0, min(ax1, bx1) - max(ax0, bx0))
    ih = max(0.0, min(ay1, by1) - max(ay0, by0))
    inter = iw * ih
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    return float(inter / union) if union > 0 else 0.0


MAX_CANDIDATES = 8          # SAM proposals under a point that are compared by their 3D consistency


def seed_candidates(prompt: Prompt, camera: Any, vp: ViewProposals, points: list[tuple[float, float]],
                    negatives: list[tuple[float, float]], box: Optional[tuple[float, float, float, float]]
                    ) -> list[Seed]:
    """The SAM proposals a prompt may mean (rules in the module docstring), largest first; a box gives the
    one that fits it best. Raises a one-line UserError when none qualifies."""
    if vp.masks is None or len(vp.ids) == 0:
        raise UserError(f"prompt {prompt.describe()}: view {camera.image_name} has no proposals; prompt another view")
    masks = vp.masks
    area = masks.reshape(len(masks), -1).sum(1)
    total = camera.width * camera.height
    cand = np.ones(len(masks), bool)
    for x, y in points:
        px, py = _pixel(camera, x, y)
        cand &= masks[:, py, px]
    for x, y in negatives:
        px, py = _pixel(camera, x, y)
        cand &= ~masks[:, py, px]
    idx = np.flatnonzero(cand)
    what = "point" + ("s" if len(points) > 1 else "")
    if box is not None:
        overlap = np.array([_box_iou(masks[k], box) for k in idx])
        keep = overlap >= MIN_BOX_OVERLAP
        if not keep.any():
            raise UserError(f"prompt {prompt.describe()}: no SAM proposal of view {camera.image_name} fits the box "
                            f"(best box overlap {overlap.max(initial=0):.2f} < {MIN_BOX_OVERLAP}); draw the box around "
                            "one object or use --prompt X,Y")
        best = idx[keep][np.lexsort((-area[idx[keep]], -overlap[keep]))[0]]
        return [Seed(camera, masks[best].copy(), f"SAM mask {vp.ids[best]} of {len(vp.ids)} ({area[best]:,} px, "
                                                 f"box overlap {overlap[keep].max():.2f})")]
    if idx.size == 0:
        raise UserError(f"prompt {prompt.describe()}: no SAM proposal of view {camera.image_name} contains the "
                        f"{what}" + (" and excludes the negative points" if negatives else "")
                        + "; click inside the object, or prompt another view")
    objects = idx[area[idx] < BACKGROUND_FRACTION * total]
    pool = objects if objects.size else idx
    pool = pool[np.argsort(-area[pool], kind="stable")][:MAX_CANDIDATES]
    return [Seed(camera, masks[k].copy(), f"SAM mask {vp.ids[k]} ({area[k]:,} px, {100 * area[k] / total:.0f} % "
                                          "of the view)") for k in pool]


def choose_seed(candidates: list[Seed], consistency: list[float], granularity: str = "whole") -> tuple[Seed, str]:
    """Among candidates whose 3D consistency is within CONSISTENT_SHARE of the best one, the largest
    (``whole``) or the smallest (``part``). Returns (seed, why)."""
    if len(candidates) == 1:
        return candidates[0], candidates[0].description
    best = max(consistency)
    ok = [i for i, c in enumerate(consistency) if c >= CONSISTENT_SHARE * best]
    areas = [int(candidates[i].mask.sum()) for i in ok]
    pick = ok[int(np.argmax(areas))] if granularity == "whole" else ok[int(np.argmin(areas))]
    listing = "; ".join(f"{c.description.split(' (')[0]}: {int(c.mask.sum()):,} px, consistency {q:.2f}"
                        for c, q in zip(candidates, consistency))
    why = (f"{candidates[pick].description}, the {'largest' if granularity == 'whole' else 'smallest'} of the "
           f"{len(ok)} of {len(candidates)} candidates whose multi-view consistency is within "
           f"{int(100 * CONSISTENT_SHARE)} % of the best ({listing})")
    return candidates[pick], why


def seed_from_photo(prompt: Prompt, camera: Any, rgb: np.ndarray, points: list[tuple[float, float]],
                    negatives: list[tuple[float, float]], box: Optional[tuple[float, float, float, float]]) -> Seed:
    """GrabCut on the view's photo (see utils.masks.photo)."""
    from utils.masks.photo import box_mask, point_mask

    if box is not None:
        mask = box_mask(rgb, box, negatives)
        how = "GrabCut in the box"
    else:
        mask = point_mask(rgb, points, negatives)
        how = "GrabCut from the colour region under the point" + ("s" if len(points) > 1 else "")
    if mask.sum() < 16:
        raise UserError(f"prompt {prompt.describe()}: GrabCut found no object on view {camera.image_name}; draw a "
                        "box around the object (--prompt-box) or pass SAM masks with --masks")
    return Seed(camera, mask, f"{how} ({int(mask.sum()):,} px, {100 * mask.mean():.0f} % of the view)")
