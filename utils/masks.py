"""2D masks for segmentation: read the formats found in the wild, match them to views, stream label maps.

Formats (``fmt``, detected from the path when ``"auto"``):

- ``binary``: one image per view, PNG or JPEG; a pixel is inside when any colour channel is > 127
  (16-bit: > 32767). One label. JPEGs are always read this way (lossy files cannot hold exact ids).
- ``ids``: one integer PNG per view (8/16-bit grey, palette indices, or colour-coded RGB), 0 = background,
  every other value one label. ``auto`` picks ``ids`` over ``binary`` when the first non-empty PNG has
  more than two distinct values or a value other than 0/255; either way a 0/255 folder gives one label.
- ``sam``: SAM automatic-mask folders ``<path>/<image_stem>/<k>.png`` (+ ignored ``metadata.csv``); every
  picked ``k`` is one label. SAM numbers masks per image, so a ``k`` names the same object in several views
  only if the ids were made consistent (tracked) beforehand.
- ``coco``: a COCO JSON file with RLE segmentations (compressed string or uncompressed list counts);
  labels are ``category_id`` (or the annotation ``id`` when there is none). Decoded by pycocotools when it
  is installed, else by the small decoder here (same algorithm as pycocotools' ``rleFrString``).

Label maps are int32 [H, W] with 0 = background and l = ``label_names[l - 1]``. Where picked SAM/COCO
masks overlap, a pixel takes the smallest label index, i.e. the label listed first (``labels`` order,
default ascending ids). Label numbering depends on the picked ids only, so pass ``labels=other.label_ids``
to number the labels of another view set (e.g. test views) the same way.

Masks are matched to views by image stem: case-insensitive, any image extension, and an optional
``_mask``/``-mask``/``.mask`` suffix. Files are only listed when the set is opened; each mask is read when
``items()`` reaches its view (``ids`` without ``labels`` scans the files once to find the ids).
"""
from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Optional, Sequence, Union

import cv2
import numpy as np

from utils.errors import UserError

if TYPE_CHECKING:
    from scene.cameras import Camera

FORMATS = ("auto", "binary", "ids", "sam", "coco")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
LOSSY_EXTS = (".jpg", ".jpeg", ".webp")
MASK_SUFFIXES = ("_mask", "-mask", ".mask")
# Relative aspect-ratio difference between a mask and its view beyond which the mask is called stretched.
ASPECT_TOLERANCE = 0.01

Label = Union[int, str]


# ---------------------------------------------------------------------------------------------------------
# Reading single files
# ---------------------------------------------------------------------------------------------------------
def _open_image(path: str | Path) -> Any:
    """A fully decoded PIL image; any decoding problem becomes a one-line UserError naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(path)
        img.load()
    except FileNotFoundError:
        raise UserError(f"{path}: mask file disappeared; re-run after the folder is complete") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise UserError(f"{path}: cannot decode mask ({type(e).__name__}: {e}); re-export the file or "
                        "remove it from the mask folder") from None
    return img


def read_label_png(path: str | Path) -> np.ndarray:  # [H, W] uint8 | uint16 | int32
    """Raw integer labels of a mask image, values unchanged (0 = background).

    Grey 8/16-bit → values; palette PNG → palette indices (DAVIS/VOC style); RGB(A) whose channels are
    equal → the first channel; other RGB(A) → colour code ``R << 16 | G << 8 | B`` (int32). Alpha is
    ignored. Reused by evaluation to read ground-truth label maps.
    """
    img = _open_image(path)
    mode = img.mode
    if mode == "1":
        return np.asarray(img, dtype=np.uint8)
    if mode in ("L", "P"):
        return np.asarray(img, dtype=np.uint8)
    if mode.startswith("I;16"):
        return np.asarray(img).astype(np.uint16)
    if mode == "I":
        arr = np.asarray(img)
        return arr.astype(np.uint16) if arr.min() >= 0 and arr.max() <= 65535 else arr.astype(np.int32)
    if mode == "LA":
        return np.asarray(img)[..., 0].astype(np.uint8)
    if mode in ("RGB", "RGBA"):
        rgb = np.asarray(img)[..., :3]
        if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 0] == rgb[..., 2]).all():
            return np.ascontiguousarray(rgb[..., 0])
        rgb = rgb.astype(np.int32)
        return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    raise UserError(f"{path}: unsupported image mode {mode!r} for a label map; save it as an 8/16-bit grey "
                    "or palette PNG")


def _read_binary(path: str | Path) -> tuple[np.ndarray, bool]:
    """(inside [H, W] bool, whether every value was exactly 0 or full scale)."""
    img = _open_image(path)
    mode = img.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(img)
        full = 65535 if (mode != "F" and arr.max() > 255) else 255
        if mode == "F" and arr.max() <= 1.0:
            full = 1
        return arr > full / 2, bool(np.isin(arr, (0, full)).all())
    if mode in ("1", "L"):
        arr = np.asarray(img.convert("L"))
    elif mode == "LA":
        arr = np.asarray(img)[..., 0]
    else:  # P, RGB, RGBA, CMYK, YCbCr: any colour channel counts (a green mask on black is a mask)
        arr = np.asarray(img.convert("RGB")).max(axis=2)
    return arr > 127, bool(((arr == 0) | (arr == 255)).all())


def read_binary_mask(path: str | Path) -> np.ndarray:  # [H, W] bool
    """Inside = any colour channel > 127 (16-bit: > 32767); alpha ignored."""
    return _read_binary(path)[0]


def resize_nearest(mask: np.ndarray, width: int, height: int) -> np.ndarray:  # [height, width]
    """Nearest-neighbour resize that never invents values.

    Uses ``cv2.INTER_NEAREST_EXACT`` (pixel-centre aligned, like the area-resized images) rather than
    ``cv2.INTER_NEAREST``, which samples the top-left source pixel of each block and so shifts a 1/s
    downscale by (s - 1) / 2 source pixels.
    """
    if mask.shape[:2] == (height, width):
        return mask
    src = mask.view(np.uint8) if mask.dtype == np.bool_ else mask
    if src.dtype == np.int64:  # cv2 has no 64-bit integer images
        if src.min() < np.iinfo(np.int32).min or src.max() > np.iinfo(np.int32).max:
            raise ValueError("label values do not fit in int32")
        src = src.astype(np.int32)
    out = cv2.resize(src, (int(width), int(height)), interpolation=cv2.INTER_NEAREST_EXACT)
    return out.astype(mask.dtype, copy=False)


# ---------------------------------------------------------------------------------------------------------
# COCO RLE
# ---------------------------------------------------------------------------------------------------------
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


def _decode_segmentation(seg: Any, where: str) -> np.ndarray:  # [h, w] bool
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


# ---------------------------------------------------------------------------------------------------------
# Name matching
# ---------------------------------------------------------------------------------------------------------
def match_key(name: str) -> str:
    """The key a view and a mask file share: lower case, image extensions and ``_mask`` suffixes removed
    (repeatedly, so ``IMG_1.JPG_mask.png`` → ``img_1``)."""
    key = os.path.basename(name.strip()).lower()
    changed = True
    while changed:
        changed = False
        for end in IMAGE_EXTS + MASK_SUFFIXES:
            if key.endswith(end) and len(key) > len(end):
                key = key[: -len(end)]
                changed = True
    return key


def parse_labels(text: Optional[str | Iterable[Label]]) -> Optional[list[Label]]:
    """``"3,7"`` → ``[3, 7]`` (non-integers stay strings: COCO category names). None/"" → None (all)."""
    if text is None:
        return None
    items = [t.strip() for t in text.split(",")] if isinstance(text, str) else list(text)
    out: list[Label] = []
    for t in items:
        if isinstance(t, str):
            if not t:
                continue
            out.append(int(t) if re.fullmatch(r"[+-]?\d+", t) else t)
        elif isinstance(t, (int, np.integer)) and not isinstance(t, bool):
            out.append(int(t))
        else:
            raise ValueError(f"label {t!r} is neither an integer id nor a name")
    if len(set(out)) != len(out):
        raise UserError(f"labels {text!r}: an id is listed twice; list each label once")
    return out or None


# ---------------------------------------------------------------------------------------------------------
# The streamed set
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Entry:
    """One matched view: where its mask lives."""

    camera: "Camera"
    source: str                      # file (binary/ids), folder (sam), image file_name (coco)
    parts: tuple[Any, ...] = ()      # sam: ((k, path), ...); coco: (annotation dict, ...)
    size: Optional[tuple[int, int]] = None  # coco: (h, w) from the JSON when known


class MaskSet:
    """Masks matched to views, read one view at a time. Build it with :func:`open_masks`."""

    def __init__(self, path: Path, kind: str, entries: list[_Entry], skipped_views: list[str],
                 unmatched_files: list[str], labels: Optional[list[Label]],
                 category_names: Optional[dict[int, str]] = None):
        self.path = path
        self._kind = kind            # "binary" | "ids" | "png" (binary or ids, undecided) | "sam" | "coco"
        self._auto_png = kind == "png"
        self._entries = entries
        self._requested = labels
        self._category_names = category_names or {}
        self._label_ids: Optional[list[Label]] = None
        self._label_names: Optional[list[str]] = None
        self._warned_aspect = False
        #: image names of the views that have a mask, in view order
        self.matched_names: list[str] = [e.camera.image_name for e in entries]
        #: image names of the views without a mask (skipped)
        self.skipped_views: list[str] = skipped_views
        #: mask files (or SAM folders / COCO images) that match no view
        self.unmatched_files: list[str] = unmatched_files

    # ----- metadata -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._entries)

    @property
    def cameras(self) -> list["Camera"]:
        return [e.camera for e in self._entries]

    def source_of(self, image_name: str) -> Optional[str]:
        """The file (binary/ids), folder (sam) or COCO image name holding this view's mask; None if none."""
        for e in self._entries:
            if e.camera.image_name == image_name:
                return e.source
        return None

    @property
    def fmt(self) -> str:
        """The resolved format (reads files only to tell ``binary`` from ``ids`` in PNG folders)."""
        self._resolve()
        return self._kind

    @property
    def label_ids(self) -> list[Label]:
        """Raw id of each label (pixel value, SAM k or COCO category id); binary masks: ``[1]``."""
        self._resolve()
        assert self._label_ids is not None
        return list(self._label_ids)

    @property
    def label_names(self) -> list[str]:
        self._resolve()
        assert self._label_names is not None
        return list(self._label_names)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def subset(self, indices: Iterable[int]) -> "MaskSet":
        """The same masks for some of the matched views (labels numbered as in the full set)."""
        self._resolve()
        picked = [self._entries[i] for i in indices]
        out = MaskSet(self.path, self._kind, picked, list(self.skipped_views), list(self.unmatched_files),
                      self._requested, self._category_names)
        out._auto_png = self._auto_png
        out._label_ids, out._label_names = list(self._label_ids or []), list(self._label_names or [])
        return out

    # ----- streaming ------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[tuple["Camera", np.ndarray]]:
        return self.items()

    def items(self) -> Iterator[tuple["Camera", np.ndarray]]:
        """Yield ``(camera, label_map [camera.height, camera.width] int32)`` one view at a time, in view
        order. Mismatched aspect ratios, non-binary values in auto-detected binary PNGs and labels seen
        in no view are counted and warned about once when the iteration ends."""
        self._resolve()
        return self._iterate()

    def _iterate(self) -> Iterator[tuple["Camera", np.ndarray]]:
        stretched: list[str] = []
        example = ""
        inexact: list[str] = []
        seen = np.zeros(self.num_labels + 1, dtype=bool)
        done = 0
        try:
            for e in self._entries:
                small, exact = self._load_small(e)
                cam = e.camera
                h, w = small.shape
                if _stretched(w, h, cam.width, cam.height):
                    if not stretched:
                        example = f"{Path(e.source).name} is {w}x{h}, view {cam.width}x{cam.height}"
                    stretched.append(cam.image_name)
                if not exact:
                    inexact.append(Path(e.source).name)
                label_map = self._prepare(cam, small).astype(np.int32, copy=False)
                seen |= np.bincount(label_map.ravel(), minlength=seen.size) > 0
                done += 1
                yield cam, label_map
        finally:
            if stretched and not self._warned_aspect:
                self._warned_aspect = True
                warnings.warn(f"{self.path}: {len(stretched)} of {len(self._entries)} masks have another aspect "
                              f"ratio than their view (e.g. {example}); they were stretched to the view — "
                              "check that masks belong to these images", stacklevel=2)
            if inexact and self._auto_png:
                warnings.warn(f"{self.path}: {len(inexact)} masks detected as binary have values other than "
                              f"0/255 (e.g. {inexact[0]}), thresholded at 127; pass fmt='ids' if they hold "
                              "instance ids", stacklevel=2)
            if done == len(self._entries) and done:
                missing = [n for n, s in zip(self.label_names, seen[1:]) if not s]
                if missing:
                    warnings.warn(f"{self.path}: {len(missing)} of {self.num_labels} labels appear in no view "
                                  f"(e.g. {missing[0]}); they will get no Gaussians", stacklevel=2)

    def _prepare(self, camera: "Camera", small: np.ndarray) -> np.ndarray:
        """Mask-resolution labels → view resolution: nearest resize (pixel-centre aligned, as
        :func:`resize_nearest`) and the camera's undistortion, exactly as its image."""
        return camera.prepare_mask(small)

    def _label_dtype(self) -> type:
        n = len(self._label_ids or ())
        return np.uint8 if n < 256 else (np.uint16 if n < 65536 else np.int32)

    def _load_small(self, e: _Entry) -> tuple[np.ndarray, bool]:
        """One view's label map at the mask's own resolution (small dtype), and whether its values were
        exact (binary PNGs: only 0/255)."""
        dtype = self._label_dtype()
        if self._kind == "binary":
            inside, exact = _read_binary(e.source)
            return inside.astype(dtype), exact or e.source.lower().endswith(LOSSY_EXTS)
        if self._kind == "ids":
            raw = read_label_png(e.source)
            return self._lookup(raw).astype(dtype, copy=False), True
        if self._kind == "sam":
            return self._compose_sam(e, dtype), True
        return self._compose_coco(e, dtype), True

    def _lookup(self, raw: np.ndarray) -> np.ndarray:  # [H, W] int64 label indices
        ids = np.asarray(self._label_ids, dtype=np.int64)
        if len(ids) == 0:
            return np.zeros(raw.shape, dtype=np.int64)
        if raw.dtype in (np.uint8, np.uint16):  # table lookup: O(pixels)
            lut = np.zeros(np.iinfo(raw.dtype).max + 1, dtype=np.int64)
            ok = (ids >= 0) & (ids < lut.size)
            lut[ids[ok]] = np.flatnonzero(ok) + 1
            return lut[raw]
        order = np.argsort(ids, kind="stable")
        sorted_ids = ids[order]
        pos = np.clip(np.searchsorted(sorted_ids, raw), 0, len(ids) - 1)
        hit = sorted_ids[pos] == raw
        return np.where(hit, order[pos] + 1, 0)

    def _compose_sam(self, e: _Entry, dtype: type) -> np.ndarray:
        files = dict(e.parts)
        index = {k: i + 1 for i, k in enumerate(self._label_ids or ())}
        out: Optional[np.ndarray] = None
        shape: Optional[tuple[int, int]] = None
        # Paint the largest index first so the smallest (first-listed) label wins on overlaps.
        for k in sorted((k for k in files if k in index), key=lambda k: -index[k]):
            inside = read_binary_mask(files[k])
            if out is None:
                shape = inside.shape
                out = np.zeros(shape, dtype=dtype)
            elif inside.shape != shape:
                raise UserError(f"{files[k]}: {inside.shape[1]}x{inside.shape[0]} differs from the other masks "
                                f"of {e.source} ({shape[1]}x{shape[0]}); re-export the folder")
            out[inside] = index[k]
        if out is None:  # no picked mask in this view: all background, at the size of any file in it
            if files:
                first = read_binary_mask(next(iter(files.values())))
                return np.zeros(first.shape, dtype=dtype)
            return np.zeros((e.camera.height, e.camera.width), dtype=dtype)
        return out

    def _compose_coco(self, e: _Entry, dtype: type) -> np.ndarray:
        index = {k: i + 1 for i, k in enumerate(self._label_ids or ())}
        where = f"{self.path} ({e.source})"
        picked = [(index[_coco_label(a, where)], a) for a in e.parts if _coco_label(a, where) in index]
        shape = e.size
        masks = []
        for l, a in picked:
            m = _decode_segmentation(a.get("segmentation"), f"{where} annotation {a.get('id', '?')}")
            if shape is None:
                shape = m.shape
            elif m.shape != shape:
                raise UserError(f"{where}: annotation {a.get('id', '?')} is {m.shape[1]}x{m.shape[0]}, the image "
                                f"{shape[1]}x{shape[0]}; fix the RLE sizes")
            masks.append((l, m))
        if shape is None:
            shape = (e.camera.height, e.camera.width)
        out = np.zeros(shape, dtype=dtype)
        for l, m in sorted(masks, key=lambda t: -t[0]):
            out[m] = l
        return out

    # ----- label resolution -----------------------------------------------------------------------
    def _resolve(self) -> None:
        if self._label_ids is not None:
            return
        req = self._requested
        if self._kind == "png":  # picking ids only makes sense for id maps
            self._kind = "ids" if req is not None else self._detect_png_kind()
        if self._kind == "binary":
            if req is not None:
                raise UserError(f"{self.path}: binary masks hold one label; drop the label list "
                                "(or pass fmt='ids' if the PNGs hold instance ids)")
            self._label_ids, self._label_names = [1], ["object"]
            return
        if self._kind == "ids":
            if any(e.source.lower().endswith(LOSSY_EXTS) for e in self._entries):
                bad = next(e.source for e in self._entries if e.source.lower().endswith(LOSSY_EXTS))
                raise UserError(f"{bad}: lossy JPEG/WebP masks cannot hold exact ids; save ids as PNG or "
                                "pass fmt='binary'")
            if req is None:
                found: set[int] = set()
                for e in self._entries:
                    found.update(int(v) for v in _distinct(read_label_png(e.source)))
                found.discard(0)
                ids: list[Label] = sorted(found)
                if len(ids) > 100 and self._auto_png:
                    warnings.warn(f"{self.path}: detected {len(ids)} instance ids; if these are anti-aliased "
                                  "binary masks pass fmt='binary'", stacklevel=4)
            else:
                ids = self._check_int_labels(req, "pixel value")
                if 0 in ids:
                    raise UserError(f"{self.path}: id 0 is the background; pick non-zero ids")
            self._label_ids, self._label_names = ids, [str(i) for i in ids]
            return
        if self._kind == "sam":
            avail = sorted({k for e in self._entries for k, _ in e.parts})
            ids = avail if req is None else self._check_int_labels(req, "SAM mask id", avail)
            self._label_ids, self._label_names = ids, [str(i) for i in ids]
            return
        # coco
        where = str(self.path)
        avail = sorted({_coco_label(a, where) for e in self._entries for a in e.parts})
        if req is None:
            ids = avail
        else:
            by_name = {n: i for i, n in self._category_names.items()}
            ids = []
            for r in req:
                if isinstance(r, str):
                    if r not in by_name:
                        raise UserError(f"{self.path}: no category named {r!r} (have {sorted(by_name)[:10]}); "
                                        "pick ids or names from the JSON")
                    r = by_name[r]
                ids.append(r)
            ids = self._check_int_labels(ids, "category id", avail)
        names = [self._category_names.get(int(i), str(i)) for i in ids]
        if len(set(names)) != len(names):
            names = [str(i) for i in ids]
        self._label_ids, self._label_names = ids, names

    def _check_int_labels(self, req: list[Label], what: str, avail: Optional[list[int]] = None) -> list[Label]:
        for r in req:
            if not isinstance(r, int):
                raise UserError(f"{self.path}: label {r!r} is not an integer {what}; pass ids like 3,7")
        if avail is not None:
            absent = [r for r in req if r not in set(avail)]
            if absent:
                shown = ",".join(str(a) for a in avail[:20]) + ("..." if len(avail) > 20 else "")
                raise UserError(f"{self.path}: {what} {absent[0]} occurs in no matched view (have {shown}); "
                                "pick existing ids")
        return list(req)

    def _detect_png_kind(self) -> str:
        """binary vs ids from the first non-empty lossless mask (see module docstring)."""
        for e in self._entries:
            if e.source.lower().endswith(LOSSY_EXTS):
                continue
            vals = _distinct(read_label_png(e.source))
            if vals.size == 1 and vals[0] == 0:
                continue
            return "ids" if vals.size > 2 or not np.isin(vals, (0, 255)).all() else "binary"
        return "binary"


def _distinct(raw: np.ndarray) -> np.ndarray:  # sorted distinct values of a label image
    if raw.dtype in (np.uint8, np.uint16):
        return np.flatnonzero(np.bincount(raw.ravel(), minlength=1))
    return np.unique(raw)


def _stretched(mw: int, mh: int, w: int, h: int) -> bool:
    """Whether a mw x mh mask and a w x h view differ in aspect ratio by more than ASPECT_TOLERANCE plus
    what rounding either size to whole pixels explains (|w·mh − h·mw| ≤ ½(max(mw, w) + max(mh, h)))."""
    slack = ASPECT_TOLERANCE * w * mh + 0.5 * (max(mw, w) + max(mh, h))
    return abs(w * mh - h * mw) > slack


def _coco_label(ann: dict, where: str) -> int:
    v = ann.get("category_id", ann.get("id"))
    if isinstance(v, bool) or not isinstance(v, int):
        raise UserError(f"{where}: an annotation has no integer category_id or id; fix the JSON")
    return v


# ---------------------------------------------------------------------------------------------------------
# Opening a folder / file
# ---------------------------------------------------------------------------------------------------------
def _is_image_file(p: Path) -> bool:
    return p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTS


def _sam_files(folder: Path) -> list[tuple[int, str]]:
    out = []
    for p in folder.iterdir():
        if _is_image_file(p) and re.fullmatch(r"\d+", p.stem):
            out.append((int(p.stem), str(p)))
    return sorted(out)


def _detect_kind(path: Path) -> str:
    if path.is_file():
        if path.suffix.lower() == ".json":
            return "coco"
        raise UserError(f"{path}: a mask path must be a folder of masks or a COCO .json file; pass the folder")
    children = [p for p in path.iterdir() if not p.name.startswith(".")]
    if any(p.is_dir() and _sam_files(p) for p in children):
        return "sam"
    if any(_is_image_file(p) for p in children):
        return "png"
    if len([p for p in children if p.suffix.lower() == ".json"]) == 1:
        return "coco"
    raise UserError(f"{path}: no mask images, SAM sub-folders or COCO .json found; pass the folder holding "
                    "the masks")


def _view_keys(cameras: Sequence["Camera"]) -> dict[str, list["Camera"]]:
    keys: dict[str, list["Camera"]] = {}
    for cam in cameras:
        keys.setdefault(match_key(cam.image_name), []).append(cam)
    return keys


def _match(path: Path, cameras: Sequence["Camera"], candidates: list[tuple[str, Any]],
           ) -> tuple[dict[str, tuple[str, Any]], list[str], list[str]]:
    """Match (display name, payload) candidates to views. Returns (view key → candidate, skipped view
    names, unmatched candidate names); raises on zero matches, duplicates and ambiguous view names."""
    keys = _view_keys(cameras)
    claimed: dict[str, tuple[str, Any]] = {}
    unmatched: list[str] = []
    for name, payload in candidates:
        key = match_key(name)
        if key not in keys:
            unmatched.append(name)
            continue
        if key in claimed:
            raise UserError(f"{path}: {claimed[key][0]!r} and {name!r} both match view "
                            f"{keys[key][0].image_name!r}; keep one of them")
        if len(keys[key]) > 1:
            uids = ", ".join(str(c.uid) for c in keys[key])
            raise UserError(f"{path}: {name!r} matches {len(keys[key])} views named {keys[key][0].image_name!r} "
                            f"(uids {uids}); pass the cameras of one split only")
        claimed[key] = (name, payload)
    if not claimed:
        cam = cameras[0]
        found = repr(candidates[0][0]) if candidates else "nothing"
        raise UserError(f"{path}: no mask matches any of the {len(cameras)} views (expected e.g. "
                        f"'{cam.image_name}.png' for view {cam.image_name!r}, found {found}); name masks "
                        "after the image file stems")
    skipped = [c.image_name for c in cameras if match_key(c.image_name) not in claimed]
    return claimed, skipped, unmatched


def _warn_counts(path: Path, n_views: int, skipped: list[str], unmatched: list[str], what: str,
                 stacklevel: int = 3, other_views: Sequence[str] = ()) -> None:
    other_keys = {match_key(v) for v in other_views}
    if other_keys:
        outside = [u for u in unmatched if match_key(u) in other_keys]
        unmatched = [u for u in unmatched if match_key(u) not in other_keys]
        if outside:
            warnings.warn(f"{path}: {len(outside)} {what} belong to views outside this split (e.g. {outside[0]}, "
                          f"held out by --eval) and are not used", stacklevel=stacklevel)
    if skipped:
        warnings.warn(f"{path}: {len(skipped)} of {n_views} views have no mask and are skipped "
                      f"(e.g. {skipped[0]})", stacklevel=stacklevel)
    if unmatched:
        warnings.warn(f"{path}: {len(unmatched)} {what} match no view and are ignored (e.g. {unmatched[0]})",
                      stacklevel=stacklevel)


def open_masks(path: str | Path, cameras: Sequence["Camera"], fmt: str = "auto",
               labels: Optional[str | Iterable[Label]] = None, other_views: Sequence[str] = ()) -> MaskSet:
    """Index the masks at ``path`` for ``cameras`` (no mask pixels are read here).

    ``fmt``: "auto" | "binary" | "ids" | "sam" | "coco". ``labels``: ids to keep, in priority order
    (e.g. ``"3,7"`` or ``[3, 7]``; COCO also accepts category names); default all. Views without a mask
    and masks without a view are counted in one warning each; ``other_views`` (image names of the scene's
    views outside ``cameras``, e.g. the --eval hold-out) turns "matches no view" into "belongs to another split".
    """
    path = Path(path)
    if fmt not in FORMATS:
        raise UserError(f"mask format {fmt!r}: unknown; use one of {', '.join(FORMATS)}")
    if not path.exists():
        raise UserError(f"{path}: mask path does not exist; pass the mask folder or COCO .json file")
    if not cameras:
        raise UserError(f"{path}: no views to match masks to; check the scene's cameras")
    picked = parse_labels(labels)
    kind = _detect_kind(path) if fmt == "auto" else fmt
    n = len(cameras)

    if kind in ("png", "binary", "ids"):
        if not path.is_dir():
            raise UserError(f"{path}: {kind} masks are a folder of images; pass the folder")
        files = sorted(p for p in path.iterdir() if _is_image_file(p))
        claimed, skipped, unmatched = _match(path, cameras, [(p.name, str(p)) for p in files])
        entries = [_Entry(c, claimed[match_key(c.image_name)][1]) for c in cameras
                   if match_key(c.image_name) in claimed]
        if kind == "png" and all(e.source.lower().endswith(LOSSY_EXTS) for e in entries):
            kind = "binary"  # JPEG masks are always thresholded
        _warn_counts(path, n, skipped, unmatched, "mask files", other_views=other_views)
        return MaskSet(path, kind, entries, skipped, unmatched, picked)

    if kind == "sam":
        if not path.is_dir():
            raise UserError(f"{path}: SAM masks are a folder of <image>/<k>.png folders; pass that folder")
        dirs = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
        claimed, skipped, unmatched = _match(path, cameras, [(p.name, p) for p in dirs])
        entries = []
        for c in cameras:
            key = match_key(c.image_name)
            if key in claimed:
                folder: Path = claimed[key][1]
                entries.append(_Entry(c, str(folder), tuple(_sam_files(folder))))
        _warn_counts(path, n, skipped, unmatched, "SAM folders", other_views=other_views)
        return MaskSet(path, "sam", entries, skipped, unmatched, picked)

    # coco
    json_path = path
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix.lower() == ".json")
        if len(found) != 1:
            raise UserError(f"{path}: expected one COCO .json in the folder, found {len(found)}; pass the file")
        json_path = found[0]
    return _open_coco(json_path, cameras, picked, other_views)


def _open_coco(path: Path, cameras: Sequence["Camera"], picked: Optional[list[Label]],
               other_views: Sequence[str] = ()) -> MaskSet:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: cannot read COCO JSON ({type(e).__name__}: {e}); re-export the file") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("annotations"), list):
        raise UserError(f"{path}: not a COCO file (needs 'images' and 'annotations' lists); export COCO RLE JSON")
    by_image: dict[Any, list[dict]] = {}
    for a in data["annotations"]:
        if not isinstance(a, dict) or "image_id" not in a:
            raise UserError(f"{path}: an annotation has no image_id; fix the JSON")
        by_image.setdefault(a["image_id"], []).append(a)
    candidates = []
    for im in data["images"]:
        if not isinstance(im, dict) or "id" not in im or not isinstance(im.get("file_name"), str):
            raise UserError(f"{path}: an images entry lacks id or file_name; fix the JSON")
        size = (int(im["height"]), int(im["width"])) if "height" in im and "width" in im else None
        candidates.append((im["file_name"], (im["id"], size)))
    claimed, skipped, unmatched = _match(path, cameras, candidates)
    entries = []
    for c in cameras:
        key = match_key(c.image_name)
        if key in claimed:
            name, (image_id, size) = claimed[key]
            entries.append(_Entry(c, name, tuple(by_image.get(image_id, ())), size))
    categories = {}
    for cat in data.get("categories") or ():
        if isinstance(cat, dict) and isinstance(cat.get("id"), int) and isinstance(cat.get("name"), str):
            categories[cat["id"]] = cat["name"]
    _warn_counts(path, len(cameras), skipped, unmatched, "COCO images", stacklevel=4, other_views=other_views)
    return MaskSet(path, "coco", entries, skipped, unmatched, picked, categories)


# ---------------------------------------------------------------------------------------------------------
# Vote weights
# ---------------------------------------------------------------------------------------------------------
def binary_weights(mask: np.ndarray) -> np.ndarray:  # [H, W, 1] float32
    """Single-label vote weights: +1 inside (``mask > 0``), -1 outside.

    With ``votes = vote(camera, gaussians, weights)`` a Gaussian's vote is (αT mass inside) − (αT mass
    outside), summed over views; vote > 0 → the object (the paper's rule). One channel instead of two.
    """
    inside = np.asarray(mask) > 0
    return np.where(inside, np.float32(1.0), np.float32(-1.0))[..., None]


def onehot_weights(label_map: np.ndarray, num_labels: int) -> np.ndarray:  # [H, W, L+1] float32
    """Multi-label vote weights: channel k = 1 where ``label_map == k`` (k = 0 background), 0 elsewhere.

    Votes then hold each Gaussian's αT mass per label and argmax picks the label it contributes most to.
    Signed channels (+1 at k, −1 elsewhere) would give 2·mass_k − total: the same argmax, so the unsigned
    form is kept (non-negative, readable as mass). For one label, argmax over [background, object] equals
    the sign of :func:`binary_weights`' vote.
    """
    lm = np.asarray(label_map)
    if lm.size and (lm.min() < 0 or lm.max() > num_labels):
        raise ValueError(f"label map values must lie in 0..{num_labels}")
    out = np.zeros(lm.shape + (num_labels + 1,), dtype=np.float32)
    np.put_along_axis(out, lm.astype(np.intp)[..., None], np.float32(1.0), axis=-1)
    return out


def label_weights(label_map: np.ndarray, num_labels: int) -> np.ndarray:  # [H, W, K] float32
    """Vote weights for ``num_labels``: K = 1 signed channel for one label, else K = L+1 one-hot channels.
    Decide with :func:`votes_to_labels`."""
    if num_labels == 1:
        return binary_weights(label_map)
    return onehot_weights(label_map, num_labels)


def votes_to_labels(votes: Any) -> Any:  # votes [N, K] (numpy or torch) -> [N] int64
    """Label per Gaussian from accumulated votes: K = 1 → 1 if vote > 0 else 0; K > 1 → argmax.
    Gaussians whose votes are all zero (no contribution to any masked view) get -1 (undecided)."""
    undecided = (votes == 0).all(1)
    if votes.shape[1] == 1:
        lab = votes[:, 0] > 0
    else:
        lab = votes.argmax(1)
    if isinstance(votes, np.ndarray):
        lab = lab.astype(np.int64)
        lab[undecided] = -1
    else:
        lab = lab.long()
        lab[undecided] = -1
    return lab
