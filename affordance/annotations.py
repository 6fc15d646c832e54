"""Annotated source images and ground-truth label maps, read into integer class maps.

Source folder layout (``--sources DIR``, top level only, matched by file stem):

* ``DIR/<name>.json`` — a labelme file. Each shape's ``label`` must be a class name (spelling-insensitive:
  ``wrap-grasp`` = ``Wrap_Grasp``; ``_background_`` is class 0); unknown labels are an error naming the file
  and the label. ``shape_type`` polygon (default), rectangle and circle are rasterised with OpenCV;
  ``mask`` (labelme >= 5.3) is a base64 PNG covering the box ``points = [[x1, y1], [x2, y2]]`` (integer
  corners, inclusive), exactly as labelme's ``shapes_to_label`` places it. Later shapes paint over earlier
  ones (labelme's order). The image is ``imagePath`` relative to the JSON (or its base name beside it), else
  the embedded ``imageData``. line / linestrip / point shapes are dropped with a counted warning.
* ``DIR/<name>.<jpg|png|...>`` with an integer label image, looked up in this order:
  ``DIR/labels/<name>.png``, ``DIR/labels/<base>_label.png``, ``DIR/<base>_label.png``,
  ``DIR/<base>_label.mat``, ``DIR/labels/<base>_label.mat``, ``DIR/<name>.png`` (only for a non-PNG image),
  where ``<base>`` is ``<name>`` without a trailing ``_rgb`` (UMD: ``knife_01_00000001_rgb.jpg`` +
  ``knife_01_00000001_label.mat``). Label images hold class indices (0 = background); a 0/255 image is read
  as a binary mask (255 -> class 1). ``.mat`` files hold the UMD ``gt_label`` array.

Ground truth for evaluation uses the same readers (:func:`read_class_map`) on PNGs or ``*_label.mat``.
"""
from __future__ import annotations

import base64
import binascii
import io
import json
import math
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import cv2
import numpy as np

from affordance.classes import ClassList
from utils.errors import UserError
from utils.masks import read_label_png, resize_nearest

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
LABEL_SUFFIXES = ("_label", "-label", "_labels", "_gt", "_mask", "-mask")
RGB_SUFFIX = "_rgb"
IGNORED_SUFFIXES = ("_depth",)  # UMD's depth PNGs sit beside the photos: neither images nor labels
SUPPORTED_SHAPES = ("polygon", "rectangle", "circle", "mask")


# ---------------------------------------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------------------------------------
def match_key(name: str) -> str:
    """Key matching a prediction, an image and its ground truth: lower-case stem without a trailing
    ``_rgb`` / ``_label`` / ``_gt`` / ``_mask`` (UMD: ``x_rgb.jpg`` <-> ``x_label.mat``)."""
    stem = Path(name).stem if Path(name).suffix.lower() in IMAGE_EXTS + (".mat", ".json") else Path(name).name
    stem = stem.lower()
    for suffix in LABEL_SUFFIXES + (RGB_SUFFIX,):
        if stem.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return stem


def _base(stem: str) -> str:
    return stem[: -len(RGB_SUFFIX)] if stem.lower().endswith(RGB_SUFFIX) and len(stem) > len(RGB_SUFFIX) else stem


# ---------------------------------------------------------------------------------------------------------
# Integer label files (PNG, UMD .mat) -> class maps
# ---------------------------------------------------------------------------------------------------------
def read_label_mat(path: str | Path) -> np.ndarray:  # [H, W] int64
    """UMD ``*_label.mat``: the ``gt_label`` array (any other single 2-D integer array is accepted too)."""
    import scipy.io

    path = Path(path)
    try:
        data = scipy.io.loadmat(str(path))
    except NotImplementedError:
        raise UserError(f"{path}: MATLAB v7.3 (HDF5) files are not supported; re-save it with save(..., '-v7')") \
            from None
    except (OSError, ValueError, TypeError) as e:
        raise UserError(f"{path}: not a readable .mat file ({str(e).splitlines()[0][:160]}); pass the data set's "
                        "*_label.mat or a label PNG") from None
    arrays = {k: v for k, v in data.items() if not k.startswith("__") and isinstance(v, np.ndarray)}
    if "gt_label" in arrays:
        arr = arrays["gt_label"]
    else:
        cands = [v for v in arrays.values() if v.ndim == 2 and v.size > 1]
        if len(cands) != 1:
            raise UserError(f"{path}: no 'gt_label' array (keys: {', '.join(sorted(arrays)) or 'none'}); save the "
                            "label map as gt_label")
        arr = cands[0]
    arr = np.asarray(arr)
    if arr.ndim != 2:
        raise UserError(f"{path}: gt_label has shape {arr.shape}, expected a 2-D label map")
    if not np.issubdtype(arr.dtype, np.integer):
        if not (np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr))):
            raise UserError(f"{path}: gt_label holds non-integer values ({arr.dtype}); store class indices")
    return arr.astype(np.int64)


def read_label_file(path: str | Path) -> np.ndarray:  # [H, W] integer, raw values
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: label file not found; check the annotation folder")
    if path.suffix.lower() == ".mat":
        return read_label_mat(path)
    if path.suffix.lower() in (".jpg", ".jpeg", ".webp"):
        raise UserError(f"{path}: lossy images cannot hold class indices; save label maps as PNG")
    return np.asarray(read_label_png(path)).astype(np.int64)


def to_class_map(raw: np.ndarray, classes: ClassList, where: str | Path) -> np.ndarray:  # [H, W] int32
    """Raw label values -> class indices 0..len(classes)-1; a 0/255 binary mask becomes 0/1.

    raw: np.ndarray  # [H, W] integer
    """
    raw = np.asarray(raw)
    values = np.unique(raw)
    top = len(classes) - 1
    if values.size and values.min() < 0:
        raise UserError(f"{where}: negative label value {int(values.min())}; labels must be class indices >= 0")
    if values.size and values.max() > top:
        if set(values.tolist()) <= {0, 255}:
            return (raw == 255).astype(np.int32)  # a binary 0/255 mask: the first affordance class
        bad = int(values[values > top][0])
        raise UserError(f"{where}: label value {bad} but only {len(classes)} classes ({', '.join(classes.names[:8])}"
                        f"{'...' if len(classes) > 8 else ''}); pass --classes with at least {bad + 1} names")
    return raw.astype(np.int32)


def read_class_map(path: str | Path, classes: ClassList) -> np.ndarray:  # [H, W] int32
    """A label PNG or ``.mat`` as class indices (ground truth and PNG/.mat sources)."""
    return to_class_map(read_label_file(path), classes, path)


# ---------------------------------------------------------------------------------------------------------
# labelme
# ---------------------------------------------------------------------------------------------------------
def decode_b64_png(text: str, where: str) -> np.ndarray:
    """A base64-encoded image (labelme's ``imageData`` / shape ``mask``) -> array."""
    from PIL import Image, UnidentifiedImageError

    try:
        raw = base64.b64decode(text, validate=False)
        with Image.open(io.BytesIO(raw)) as im:
            im.load()
            return np.asarray(im).copy()
    except (binascii.Error, ValueError, TypeError, UnidentifiedImageError, OSError) as e:
        raise UserError(f"{where}: cannot decode the base64 image ({type(e).__name__}); re-save the file in "
                        "labelme") from None


def _points(shape: dict, where: str) -> np.ndarray:  # [P, 2] float64
    try:
        pts = np.asarray(shape.get("points", []), dtype=np.float64).reshape(-1, 2)
    except (ValueError, TypeError):
        raise UserError(f"{where}: 'points' must be a list of [x, y] pairs; re-save the file in labelme") from None
    if not np.all(np.isfinite(pts)):
        raise UserError(f"{where}: non-finite point coordinates; re-save the file in labelme")
    return pts


def shape_mask(shape: dict, height: int, width: int, where: str) -> Optional[np.ndarray]:  # [H, W] bool
    """Pixels of one labelme shape; None for shape types that cover no area (line, point...)."""
    kind = shape.get("shape_type") or "polygon"
    pts = _points(shape, where)
    if kind == "mask":
        if not shape.get("mask"):
            raise UserError(f"{where}: shape_type 'mask' without 'mask' data; re-save the file in labelme >= 5.3")
        local = decode_b64_png(shape["mask"], where)
        if local.ndim == 3:
            local = local.max(axis=2)
        local = local > 0
        if len(pts) != 2:
            raise UserError(f"{where}: a mask shape needs 2 points (its box corners), got {len(pts)}")
        (x1, y1), (x2, y2) = pts.astype(int)  # labelme: np.asarray(points).astype(int), inclusive box
        if local.shape != (y2 - y1 + 1, x2 - x1 + 1):
            raise UserError(f"{where}: mask is {local.shape[1]}x{local.shape[0]} but its box [{x1},{y1}]-[{x2},{y2}] "
                            f"is {x2 - x1 + 1}x{y2 - y1 + 1}; re-save the file in labelme")
        out = np.zeros((height, width), dtype=bool)
        ys, xs = max(0, y1), max(0, x1)
        ye, xe = min(height, y2 + 1), min(width, x2 + 1)
        if ye > ys and xe > xs:
            out[ys:ye, xs:xe] = local[ys - y1:ye - y1, xs - x1:xe - x1]
        return out
    canvas = np.zeros((height, width), dtype=np.uint8)
    if kind == "polygon":
        if len(pts) < 3:
            return None
        cv2.fillPoly(canvas, [np.round(pts).astype(np.int32).reshape(-1, 1, 2)], 1)
    elif kind == "rectangle":
        if len(pts) < 2:
            raise UserError(f"{where}: a rectangle needs 2 corner points, got {len(pts)}")
        lo, hi = np.round(pts.min(axis=0)).astype(int), np.round(pts.max(axis=0)).astype(int)
        cv2.rectangle(canvas, (int(lo[0]), int(lo[1])), (int(hi[0]), int(hi[1])), 1, thickness=-1)
    elif kind == "circle":
        if len(pts) != 2:
            raise UserError(f"{where}: a circle needs 2 points (centre, rim), got {len(pts)}")
        (cx, cy), (px, py) = pts
        r = int(round(math.hypot(px - cx, py - cy)))
        cv2.circle(canvas, (int(round(cx)), int(round(cy))), r, 1, thickness=-1)
    else:
        return None
    return canvas.astype(bool)


def labelme_label_map(data: dict, classes: ClassList, height: int, width: int, path: str | Path
                      ) -> tuple[np.ndarray, Counter]:  # ([H, W] int32, dropped shape types)
    """Rasterise every shape of a labelme document; later shapes paint over earlier ones."""
    shapes = data.get("shapes")
    if not isinstance(shapes, list):
        raise UserError(f"{path}: no 'shapes' list; not a labelme file")
    out = np.zeros((height, width), dtype=np.int32)
    dropped: Counter = Counter()
    for i, shape in enumerate(shapes):
        where = f"{path} (shape {i})"
        if not isinstance(shape, dict) or "label" not in shape:
            raise UserError(f"{where}: shape without a 'label'; re-save the file in labelme")
        label = str(shape["label"])
        cls = classes.index(label)
        if cls is None:
            raise UserError(f"{path}: unknown label {label!r} (shape {i}); known classes: {', '.join(classes.names)}"
                            f" - rename the shape or pass --classes including it")
        mask = shape_mask(shape, height, width, where)
        if mask is None:
            dropped[str(shape.get("shape_type") or "polygon")] += 1
            continue
        out[mask] = cls
    return out, dropped


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read ({e}); check the file") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: invalid JSON (line {e.lineno}: {e.msg}); re-save it in labelme") from None


def is_labelme(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("shapes"), list)


# ---------------------------------------------------------------------------------------------------------
# Source images
# ---------------------------------------------------------------------------------------------------------
@dataclass
class SourceImage:
    """One annotated image; pixels are decoded on demand."""

    name: str                              # image file stem (matched against view names)
    annotation: Path                       # labelme .json, label PNG or .mat
    kind: str                              # labelme | png | mat
    image_path: Optional[Path] = None      # None: labelme imageData
    _image_data: Optional[str] = field(default=None, repr=False)

    def load_image(self) -> np.ndarray:  # [H, W, 3] float32 in [0, 1]
        if self.image_path is not None:
            from utils.image_io import read_image

            arr = read_image(self.image_path)
        else:
            arr = decode_b64_png(self._image_data or "", f"{self.annotation} (imageData)")
            if arr.ndim == 2:
                arr = np.repeat(arr[..., None], 3, axis=2)
        if arr.dtype != np.uint8:
            raise UserError(f"{self.image_path or self.annotation}: expected an 8-bit image; convert it")
        return np.ascontiguousarray(arr[..., :3], dtype=np.float32) / 255.0

    def load_labels(self, classes: ClassList, size: tuple[int, int]) -> tuple[np.ndarray, Counter]:
        """Class map [H, W] int32 at the image size (height, width), and dropped labelme shapes."""
        height, width = size
        if self.kind == "labelme":
            data = _read_json(self.annotation)
            return labelme_label_map(data, classes, height, width, self.annotation)
        cmap = read_class_map(self.annotation, classes)
        if cmap.shape != (height, width):
            mh, mw = cmap.shape
            if abs(mw / mh - width / height) > 0.01 * (width / height):
                raise UserError(f"{self.annotation}: label map is {mw}x{mh} but its image is {width}x{height} "
                                "(different aspect ratio); export the labels at the image size")
            cmap = resize_nearest(cmap, width, height)
        return cmap, Counter()


def _labelme_source(path: Path, data: dict) -> SourceImage:
    rel = data.get("imagePath")
    candidates = []
    if isinstance(rel, str) and rel:
        posix = rel.replace("\\", "/")  # labelme on Windows writes backslashes
        candidates = [path.parent / rel, path.parent / posix, path.parent / Path(posix).name]
    for c in candidates:
        if c.is_file():
            return SourceImage(path.stem, path, "labelme", c)
    if isinstance(data.get("imageData"), str) and data["imageData"]:
        return SourceImage(path.stem, path, "labelme", None, data["imageData"])
    for ext in IMAGE_EXTS:  # labelme writes imagePath; tolerate files that lost it
        c = path.with_suffix(ext)
        if c.is_file():
            return SourceImage(path.stem, path, "labelme", c)
    shown = candidates[0] if candidates else path.with_suffix(".jpg")
    raise UserError(f"{path}: image {shown} not found and no imageData embedded; put the image beside the JSON")


def _label_candidates(folder: Path, image: Path) -> list[Path]:
    stem, base = image.stem, _base(image.stem)
    out = [folder / "labels" / f"{stem}.png", folder / "labels" / f"{base}_label.png", folder / f"{base}_label.png",
           folder / f"{base}_label.mat", folder / "labels" / f"{base}_label.mat"]
    if image.suffix.lower() != ".png":
        out.append(folder / f"{stem}.png")
    return out


def find_sources(folder: str | Path) -> tuple[list[SourceImage], list[str]]:
    """Annotated images in ``folder`` (layout in the module docstring) and the names of images skipped for
    having no annotation (the caller warns with their count)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: source folder not found; pass --sources with a folder of annotated images")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    sources: list[SourceImage] = []
    claimed: set[Path] = set()
    for p in files:
        if p.suffix.lower() == ".json":
            data = _read_json(p)
            if not is_labelme(data):
                warnings.warn(f"{p}: not a labelme file (no 'shapes'); skipped", stacklevel=2)
                continue
            src = _labelme_source(p, data)
            sources.append(src)
            if src.image_path is not None:
                claimed.add(src.image_path.resolve())
    images = [p for p in files if p.suffix.lower() in IMAGE_EXTS and p.resolve() not in claimed]
    label_of: dict[Path, Path] = {}
    for img in images:
        if any(img.stem.lower().endswith(s) for s in LABEL_SUFFIXES):
            continue  # a label image itself
        for cand in _label_candidates(folder, img):
            if cand.is_file() and cand.resolve() != img.resolve():
                label_of[img] = cand
                break
    used_as_labels = {lab.resolve() for lab in label_of.values()}
    skipped = []
    for img in images:
        if img.resolve() in used_as_labels or any(img.stem.lower().endswith(s) for s in
                                                  LABEL_SUFFIXES + IGNORED_SUFFIXES):
            continue
        lab = label_of.get(img)
        if lab is None:
            skipped.append(img.name)
            continue
        sources.append(SourceImage(img.stem, lab, "mat" if lab.suffix.lower() == ".mat" else "png", img))
    names = [s.name.lower() for s in sources]
    dup = next((s.name for s in sources if names.count(s.name.lower()) > 1), None)
    if dup is not None:
        raise UserError(f"{folder}: two annotations for image {dup!r} (e.g. a labelme JSON and a label PNG); keep one")
    if not sources:
        raise UserError(f"{folder}: no annotated image (labelme .json, or an image with labels/<name>.png, "
                        "<name>_label.png or <name>_label.mat); see `affordance.py --help` for the layout")
    return sorted(sources, key=lambda s: s.name), skipped


# ---------------------------------------------------------------------------------------------------------
# Ground-truth / prediction folders
# ---------------------------------------------------------------------------------------------------------
def label_files(folder: str | Path, what: str = "ground truth") -> dict[str, Path]:
    """{match_key: file} for every label PNG / .mat in ``folder`` (a single file is allowed too)."""
    folder = Path(folder)
    if folder.is_file():
        return {match_key(folder.name): folder}
    if not folder.is_dir():
        raise UserError(f"{folder}: {what} folder not found; pass a folder of label PNGs or *_label.mat files")
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if not p.is_file() or p.name.startswith("."):
            continue
        if p.suffix.lower() in (".png", ".mat", ".tif", ".tiff", ".bmp"):
            key = match_key(p.name)
            if key in out:
                raise UserError(f"{folder}: {out[key].name} and {p.name} both match view {key!r}; keep one")
            out[key] = p
    if not out:
        raise UserError(f"{folder}: no label PNG or .mat file inside; pass the {what} folder")
    return out
