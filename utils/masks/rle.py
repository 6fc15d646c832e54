"""COCO run-length encoding: pycocotools' compressed strings and uncompressed counts, and COCO segmentations."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from utils.errors import UserError


def rle_string_to_counts(s: str | bytes) -> list[int]:
    """Decode COCO's compressed RLE string (pycocotools ``rleFrString``).

    Each count is stored in 5-bit groups (least significant first) as characters offset by 48; bit 0x20
    marks a continuation and bit 0x10 of the last group is the sign. From the fourth count on, the value is
    the difference to the count two places before.
    """
    if isinstance(s, bytes):
        s = s.decode("ascii")
    counts: list[int] = []
    p, n = 0, len(s)
    while p < n:
        x, k, more = 0, 0, True
        while more:
            if p >= n:
                raise ValueError("truncated RLE string")
            c = ord(s[p]) - 48
            if c < 0 or c > 63:
                raise ValueError(f"invalid character {s[p]!r} in RLE string")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def rle_counts_to_string(counts: Sequence[int]) -> str:
    """Inverse of :func:`rle_string_to_counts` (pycocotools ``rleToString``)."""
    out = []
    for i, cnt in enumerate(counts):
        x = int(cnt) - (int(counts[i - 2]) if i > 2 else 0)
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def rle_decode(counts: Sequence[int], height: int, width: int) -> np.ndarray:  # [height, width] bool
    """Uncompressed COCO RLE → mask. Runs alternate background/foreground starting with background and
    walk the image column by column (Fortran order)."""
    cnt = np.asarray(counts, dtype=np.int64)
    if cnt.ndim != 1 or (cnt < 0).any():
        raise ValueError("RLE counts must be a flat list of non-negative integers")
    if int(cnt.sum()) != height * width:
        raise ValueError(f"RLE counts sum to {int(cnt.sum())}, expected {height}x{width} = {height * width}")
    flat = np.repeat((np.arange(cnt.size) % 2).astype(bool), cnt)
    return flat.reshape(width, height).T


def rle_encode(mask: np.ndarray) -> list[int]:
    """Mask [H, W] → uncompressed COCO RLE counts (column-major, starting with background)."""
    flat = np.asarray(mask, dtype=bool).T.reshape(-1)
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts
    return [int(c) for c in counts]


def decode_segmentation(seg: Any, where: str) -> np.ndarray:  # [h, w] bool
    """A COCO ``segmentation`` (RLE dict; polygons only through pycocotools) → mask."""
    try:
        from pycocotools import mask as coco_mask  # optional dependency
    except ImportError:
        coco_mask = None
    if isinstance(seg, dict) and "counts" in seg and "size" in seg:
        try:
            h, w = (int(v) for v in seg["size"])
        except (TypeError, ValueError):
            raise UserError(f"{where}: RLE 'size' must be [height, width]; fix the JSON") from None
        counts = seg["counts"]
        try:
            if coco_mask is not None:
                rle = coco_mask.frPyObjects(seg, h, w) if isinstance(counts, list) else {
                    "size": [h, w], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
                return np.asarray(coco_mask.decode(rle), dtype=bool).reshape(h, w)
            if isinstance(counts, (str, bytes)):
                counts = rle_string_to_counts(counts)
            return rle_decode(counts, h, w)
        except (ValueError, TypeError) as e:
            raise UserError(f"{where}: corrupt RLE ({e}); re-export the annotation") from None
    if isinstance(seg, list) and coco_mask is None:
        raise UserError(f"{where}: polygon segmentations need pycocotools (pip install pycocotools) or "
                        "conversion to RLE")
    raise UserError(f"{where}: segmentation is neither RLE nor a polygon list; export masks as COCO RLE")
