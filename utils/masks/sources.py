"""Mask sources: one small class per format, behind two interfaces.

- :class:`LabelMasks` — a label map per view whose ids mean the same object in every view: binary masks
  (:class:`BinaryMasks`), integer id PNGs (:class:`IdMasks`), COCO RLE json (:class:`CocoMasks`), SAM-layout
  folders whose ids were tracked across views (:class:`SamTrackedMasks`, SAM2 video output). ``items()``
  yields ``(camera, label_map [H, W] int32)``, 0 = background, l = ``label_names[l - 1]``.
- :class:`ProposalMasks` — per-view proposals whose ids mean nothing across views, overlapping, at any
  granularity: SAM's automatic mask generator (:class:`SamProposals`, ``amg.py`` folders or its RLE json
  files) and, in :mod:`utils.masks.photo`, superpixels of the photo itself. ``items()`` yields
  ``(camera, ViewProposals)``; the segmentation job associates them through the 3D model.

Both match masks to views by image stem (:mod:`utils.masks.matching`), read nothing but what is needed to
tell formats apart when opened, and read one view at a time when iterated.
"""
from __future__ import annotations

import copy
import csv
import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable, Iterator, Optional, Sequence

import numpy as np

from utils.errors import UserError
from utils.masks.files import (LOSSY_EXTS, check_not_photo, distinct_values, is_image_file, read_label_png,
                               read_mask_bits)
from utils.masks.matching import Label, View, match, match_key, parse_labels, stretched, warn_counts
from utils.masks.rle import decode_segmentation

# Coverage of a view above which a mask is called "everything" (degenerate-mask warning).
FULL_COVERAGE = 0.95


@dataclass(frozen=True)
class Entry:
    """One matched view: where its mask(s) live."""

    camera: View
    source: str                      # file (binary/ids), folder or json file (sam), image file_name (coco)
    parts: tuple[Any, ...] = ()      # sam: ((k, path), ...); sam json / coco: (annotation dict, ...)
    size: Optional[tuple[int, int]] = None  # coco: (h, w) from the JSON when known


@dataclass
class CoverageStats:
    """What the masks of one pass covered, for the degenerate-mask checks of the jobs."""

    views: int = 0                                            # views read
    empty_views: list[str] = field(default_factory=list)      # no labelled pixel
    full_views: list[str] = field(default_factory=list)       # >= FULL_COVERAGE of the view labelled

    def add(self, name: str, label_map: np.ndarray) -> None:
        self.views += 1
        frac = float((label_map > 0).mean()) if label_map.size else 0.0
        if frac == 0.0:
            self.empty_views.append(name)
        elif frac >= FULL_COVERAGE:
            self.full_views.append(name)

    @property
    def all_empty(self) -> bool:
        return self.views > 0 and len(self.empty_views) == self.views

    @property
    def all_full(self) -> bool:
        return self.views > 0 and len(self.full_views) == self.views


class MaskSource:
    """Masks matched to views, read one view at a time. Open one with :func:`utils.masks.open_mask_source`."""

    fmt: ClassVar[str] = ""
    consistent: ClassVar[bool] = True   # ids mean the same object in every view

    def __init__(self, path: Path, entries: list[Entry], skipped_views: list[str], unmatched_files: list[str]):
        self.path = path
        self._entries = entries
        #: image names of the views without a mask (skipped)
        self.skipped_views: list[str] = skipped_views
        #: mask files (or SAM folders / COCO images) that match no view
        self.unmatched_files: list[str] = unmatched_files
        self._warned_aspect = False

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def cameras(self) -> list[View]:
        return [e.camera for e in self._entries]

    @property
    def matched_names(self) -> list[str]:
        """Image names of the views that have a mask, in view order."""
        return [e.camera.image_name for e in self._entries]

    def source_of(self, image_name: str) -> Optional[str]:
        """The file, folder or COCO image name holding this view's mask(s); None if none."""
        for e in self._entries:
            if e.camera.image_name == image_name:
                return e.source
        return None

    def index_of(self, image_name: str) -> Optional[int]:
        for i, e in enumerate(self._entries):
            if e.camera.image_name == image_name:
                return i
        return None

    def subset(self, indices: Iterable[int]):  # -> same class
        """The same source for some of the matched views (labels numbered as in the full set)."""
        self._before_subset()
        out = copy.copy(self)
        out._entries = [self._entries[i] for i in indices]
        out._reset_pass_state()
        return out

    def _before_subset(self) -> None:
        pass

    def _reset_pass_state(self) -> None:
        pass

    def _warn_aspect(self, stretched_names: list[str], example: str) -> None:
        if stretched_names and not self._warned_aspect:
            self._warned_aspect = True
            warnings.warn(f"{self.path}: {len(stretched_names)} of {len(self._entries)} masks have another aspect "
                          f"ratio than their view (e.g. {example}); they were stretched to the view — check that "
                          "masks belong to these images", stacklevel=3)


# ---------------------------------------------------------------------------------------------------------
# Consistent label maps
# ---------------------------------------------------------------------------------------------------------
class LabelMasks(MaskSource):
    """A label map per view with ids that mean the same object in every view."""

    consistent = True

    def __init__(self, path: Path, entries: list[Entry], skipped_views: list[str], unmatched_files: list[str],
                 labels: Optional[list[Label]] = None):
        super().__init__(path, entries, skipped_views, unmatched_files)
        self._requested = labels
        self._label_ids: Optional[list[Label]] = None
        self._label_names: Optional[list[str]] = None
        #: coverage of the last complete pass over items() (degenerate-mask checks)
        self.stats = CoverageStats()

    def _before_subset(self) -> None:
        self._resolve()  # labels are numbered by the full set

    def _reset_pass_state(self) -> None:
        self.stats = CoverageStats()

    # ----- labels ---------------------------------------------------------------------------------
    @property
    def label_ids(self) -> list[Label]:
        """Raw id of each label (pixel value, SAM k or COCO category id); binary masks: ``[1]``."""
        self._resolve()
        return list(self._label_ids or [])

    @property
    def label_names(self) -> list[str]:
        self._resolve()
        return list(self._label_names or [])

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def _resolve(self) -> None:
        if self._label_ids is None:
            self._label_ids, self._label_names = self._resolve_labels(self._requested)

    def _resolve_labels(self, requested: Optional[list[Label]]) -> tuple[list[Label], list[str]]:
        raise NotImplementedError

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

    def _label_dtype(self) -> type:
        n = len(self._label_ids or ())
        return np.uint8 if n < 256 else (np.uint16 if n < 65536 else np.int32)

    # ----- streaming ------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[tuple[View, np.ndarray]]:
        return self.items()

    def items(self) -> Iterator[tuple[View, np.ndarray]]:
        """Yield ``(camera, label_map [camera.height, camera.width] int32)`` one view at a time, in view
        order. Mismatched aspect ratios, inexact binary values and labels seen in no view are counted and
        warned about once when the iteration ends; ``stats`` holds the coverage of the pass."""
        self._resolve()
        return self._iterate()

    def _iterate(self) -> Iterator[tuple[View, np.ndarray]]:
        stretched_names: list[str] = []
        example = ""
        inexact: list[str] = []
        seen = np.zeros(self.num_labels + 1, dtype=bool)
        stats = CoverageStats()
        done = 0
        try:
            for e in self._entries:
                small, exact = self._load_small(e)
                cam = e.camera
                h, w = small.shape
                if stretched(w, h, cam.width, cam.height):
                    if not stretched_names:
                        example = f"{Path(e.source).name} is {w}x{h}, view {cam.width}x{cam.height}"
                    stretched_names.append(cam.image_name)
                if not exact:
                    inexact.append(Path(e.source).name)
                label_map = cam.prepare_mask(small).astype(np.int32, copy=False)
                seen |= np.bincount(label_map.ravel(), minlength=seen.size)[: seen.size] > 0
                stats.add(cam.image_name, label_map)
                done += 1
                yield cam, label_map
        finally:
            self._warn_aspect(stretched_names, example)
            self._warn_inexact(inexact)
            if done == len(self._entries) and done:
                self.stats = stats
                missing = [n for n, s in zip(self.label_names, seen[1:]) if not s]
                if missing:
                    warnings.warn(f"{self.path}: {len(missing)} of {self.num_labels} labels appear in no view "
                                  f"(e.g. {missing[0]}); they will get no Gaussians", stacklevel=2)

    def _warn_inexact(self, inexact: list[str]) -> None:
        pass

    def _load_small(self, e: Entry) -> tuple[np.ndarray, bool]:
        """One view's label map at the mask's own resolution (small dtype), and whether its values were exact."""
        raise NotImplementedError


class BinaryMasks(LabelMasks):
    """One image per view, PNG or JPEG; inside = any colour channel > 127 (alpha for cut-out PNGs). One label."""

    fmt = "binary"

    def __init__(self, *args: Any, auto: bool = False, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._auto = auto   # detected from the files: warn when values are not exactly 0/255

    def _resolve_labels(self, requested: Optional[list[Label]]) -> tuple[list[Label], list[str]]:
        if requested is not None:
            raise UserError(f"{self.path}: binary masks hold one label; drop the label list "
                            "(or pass fmt='ids' if the PNGs hold instance ids)")
        return [1], ["object"]

    def _load_small(self, e: Entry) -> tuple[np.ndarray, bool]:
        inside, exact = read_mask_bits(e.source)
        return inside.astype(np.uint8), exact or e.source.lower().endswith(LOSSY_EXTS)

    def _warn_inexact(self, inexact: list[str]) -> None:
        if inexact and self._auto:
            warnings.warn(f"{self.path}: {len(inexact)} masks detected as binary have values other than 0/255 "
                          f"(e.g. {inexact[0]}), thresholded at 127; pass fmt='ids' if they hold instance ids",
                          stacklevel=3)


class IdMasks(LabelMasks):
    """One integer PNG per view (8/16-bit grey, palette indices, colour-coded RGB); 0 = background."""

    fmt = "ids"

    def __init__(self, *args: Any, auto: bool = False, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._auto = auto

    def _read(self, source: str) -> np.ndarray:
        raw = read_label_png(source)
        if raw.dtype == np.uint8:
            check_not_photo(raw, source)
        elif raw.dtype == np.int32 and raw.min() >= 0:  # colour-coded RGB
            check_not_photo(np.stack([(raw >> s) & 255 for s in (16, 8, 0)], -1).astype(np.uint8), source)
        return raw

    def _resolve_labels(self, requested: Optional[list[Label]]) -> tuple[list[Label], list[str]]:
        lossy = [e.source for e in self._entries if e.source.lower().endswith(LOSSY_EXTS)]
        if lossy:
            raise UserError(f"{lossy[0]}: lossy JPEG/WebP masks cannot hold exact ids; save ids as PNG or "
                            "pass fmt='binary'")
        if requested is None:
            found: set[int] = set()
            for e in self._entries:
                found.update(int(v) for v in distinct_values(self._read(e.source)))
            found.discard(0)
            ids: list[Label] = sorted(found)
            if len(ids) > 100 and self._auto:
                warnings.warn(f"{self.path}: detected {len(ids)} instance ids; if these are anti-aliased binary "
                              "masks pass fmt='binary'", stacklevel=5)
        else:
            ids = self._check_int_labels(requested, "pixel value")
            if 0 in ids:
                raise UserError(f"{self.path}: id 0 is the background; pick non-zero ids")
        return ids, [str(i) for i in ids]

    def _load_small(self, e: Entry) -> tuple[np.ndarray, bool]:
        return self._lookup(self._read(e.source)).astype(self._label_dtype(), copy=False), True

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

    def present_ids(self) -> set[int]:
        """Ids that occur in some matched view (one extra read of the masks)."""
        found: set[int] = set()
        for e in self._entries:
            found.update(int(v) for v in distinct_values(self._read(e.source)))
        return found


class SamTrackedMasks(LabelMasks):
    """SAM-layout folders ``<view>/<k>.png`` whose ids were made consistent across views (a tracker, SAM2's
    video predictor): every picked ``k`` is one label; where masks overlap the label listed first wins."""

    fmt = "sam-tracked"

    def _resolve_labels(self, requested: Optional[list[Label]]) -> tuple[list[Label], list[str]]:
        avail = sorted({k for e in self._entries for k, _ in e.parts})
        ids = avail if requested is None else self._check_int_labels(requested, "SAM mask id", avail)
        return ids, [str(i) for i in ids]

    def _load_small(self, e: Entry) -> tuple[np.ndarray, bool]:
        dtype = self._label_dtype()
        files = dict(e.parts)
        index = {k: i + 1 for i, k in enumerate(self._label_ids or ())}
        out: Optional[np.ndarray] = None
        shape: Optional[tuple[int, int]] = None
        # Paint the largest index first so the smallest (first-listed) label wins on overlaps.
        for k in sorted((k for k in files if k in index), key=lambda k: -index[k]):
            inside = read_mask_bits(files[k])[0]
            if out is None:
                shape = inside.shape
                out = np.zeros(shape, dtype=dtype)
            elif inside.shape != shape:
                raise UserError(f"{files[k]}: {inside.shape[1]}x{inside.shape[0]} differs from the other masks "
                                f"of {e.source} ({shape[1]}x{shape[0]}); re-export the folder")
            out[inside] = index[k]
        if out is None:  # no picked mask in this view: all background, at the size of any file in it
            if files:
                first = read_mask_bits(next(iter(files.values())))[0]
                return np.zeros(first.shape, dtype=dtype), True
            return np.zeros((e.camera.height, e.camera.width), dtype=dtype), True
        return out, True


def coco_label(ann: dict, where: str) -> int:
    v = ann.get("category_id", ann.get("id"))
    if isinstance(v, bool) or not isinstance(v, int):
        raise UserError(f"{where}: an annotation has no integer category_id or id; fix the JSON")
    return v


class CocoMasks(LabelMasks):
    """A COCO JSON with RLE segmentations (polygons through pycocotools); labels are category ids."""

    fmt = "coco"

    def __init__(self, *args: Any, category_names: Optional[dict[int, str]] = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._category_names = category_names or {}

    def _resolve_labels(self, requested: Optional[list[Label]]) -> tuple[list[Label], list[str]]:
        where = str(self.path)
        avail = sorted({coco_label(a, where) for e in self._entries for a in e.parts})
        if requested is None:
            ids: list[Label] = list(avail)
        else:
            by_name = {n: i for i, n in self._category_names.items()}
            ids = []
            for r in requested:
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
        return ids, names

    def _load_small(self, e: Entry) -> tuple[np.ndarray, bool]:
        index = {k: i + 1 for i, k in enumerate(self._label_ids or ())}
        where = f"{self.path} ({e.source})"
        picked = [(index[coco_label(a, where)], a) for a in e.parts if coco_label(a, where) in index]
        shape = e.size
        masks = []
        for lab, a in picked:
            m = decode_segmentation(a.get("segmentation"), f"{where} annotation {a.get('id', '?')}")
            if shape is None:
                shape = m.shape
            elif m.shape != shape:
                raise UserError(f"{where}: annotation {a.get('id', '?')} is {m.shape[1]}x{m.shape[0]}, the image "
                                f"{shape[1]}x{shape[0]}; fix the RLE sizes")
            masks.append((lab, m))
        if shape is None:
            shape = (e.camera.height, e.camera.width)
        out = np.zeros(shape, dtype=self._label_dtype())
        for lab, m in sorted(masks, key=lambda t: -t[0]):
            out[m] = lab
        return out, True


# ---------------------------------------------------------------------------------------------------------
# Per-view proposals
# ---------------------------------------------------------------------------------------------------------
@dataclass
class ViewProposals:
    """One view's proposals at the view's resolution: overlapping masks of any granularity, or a partition.

    Exactly one of ``masks`` and ``partition`` is set.
    """

    camera: View
    masks: Optional[np.ndarray] = None      # [K, H, W] bool
    ids: list[int] = field(default_factory=list)   # the per-view id of each mask (SAM's k)
    scores: Optional[np.ndarray] = None     # [K] SAM predicted_iou * stability_score (metadata), None if unknown
    partition: Optional[np.ndarray] = None  # [H, W] int32 region ids 0..R-1 (photo superpixels)
    source: str = ""
    file_size: Optional[tuple[int, int]] = None  # (width, height) of the mask files (the photo's size)

    def __len__(self) -> int:
        return len(self.ids) if self.masks is not None else int(self.partition.max()) + 1  # type: ignore[union-attr]

    def containing(self, x: int, y: int) -> list[int]:
        """Indices of the masks that contain pixel (x, y) (view pixel coordinates)."""
        if self.masks is None:
            return [int(self.partition[y, x])]  # type: ignore[index]
        return [int(k) for k in np.flatnonzero(self.masks[:, y, x])]


class ProposalMasks(MaskSource):
    """Per-view proposals whose ids mean nothing across views (associated through the 3D model)."""

    consistent = False

    def items(self, workers: int = 2) -> Iterator[tuple[View, ViewProposals]]:
        """Yield ``(camera, ViewProposals)`` one view at a time, in view order; the next views are loaded
        (read, or superpixels computed) by ``workers`` threads while the caller votes this one."""
        from utils.prefetch import prefetch_map

        for e, vp in zip(self._entries, prefetch_map(self._load, self._entries, workers)):
            yield e.camera, vp

    def __iter__(self) -> Iterator[tuple[View, ViewProposals]]:
        return self.items()

    def view(self, image_name: str) -> ViewProposals:
        i = self.index_of(image_name)
        if i is None:
            raise KeyError(image_name)
        return self._load(self._entries[i])

    def _load(self, e: Entry) -> ViewProposals:
        raise NotImplementedError


def _read_metadata(folder: Path) -> dict[int, float]:
    """amg.py's metadata.csv -> {k: predicted_iou * stability_score}; missing or malformed -> {} (never required)."""
    path = folder / "metadata.csv"
    if not path.is_file():
        return {}
    out: dict[int, float] = {}
    try:
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                try:
                    out[int(row["id"])] = float(row["predicted_iou"]) * float(row["stability_score"])
                except (KeyError, TypeError, ValueError):
                    return {}
    except (OSError, UnicodeDecodeError, csv.Error):
        return {}
    return out


class SamProposals(ProposalMasks):
    """SAM automatic-mask-generator output: ``<stem>/<k>.png`` folders (+ optional ``metadata.csv``, amg.py's
    default) or ``<stem>.json`` files holding a list of ``{"segmentation": RLE, ...}`` (amg.py
    ``--convert-to-rle``). Ids are per image; masks overlap and come at several granularities."""

    fmt = "sam"

    def _load(self, e: Entry) -> ViewProposals:
        cam = e.camera
        masks, ids, scores = [], [], []
        if e.source.lower().endswith(".json"):
            for k, ann in enumerate(e.parts):
                m = decode_segmentation(ann.get("segmentation"), f"{e.source} mask {k}")
                masks.append(m)
                ids.append(k)
                iou, stab = ann.get("predicted_iou"), ann.get("stability_score")
                scores.append(float(iou) * float(stab) if isinstance(iou, (int, float)) and
                              isinstance(stab, (int, float)) else np.nan)
        else:
            meta = _read_metadata(Path(e.source))
            for k, path in e.parts:
                masks.append(read_mask_bits(path)[0])
                ids.append(int(k))
                scores.append(meta.get(int(k), np.nan))
        h, w = cam.height, cam.width
        shapes = {m.shape for m in masks}
        if len(shapes) > 1:
            raise UserError(f"{e.source}: its masks differ in size ({', '.join(f'{s[1]}x{s[0]}' for s in shapes)}); "
                            "re-export the folder")
        if masks and stretched(masks[0].shape[1], masks[0].shape[0], w, h):
            self._warn_aspect([cam.image_name], f"{Path(e.source).name} is {masks[0].shape[1]}x{masks[0].shape[0]}, "
                                                f"view {w}x{h}")
        stack = np.zeros((len(masks), h, w), dtype=bool)
        for i, m in enumerate(masks):
            stack[i] = cam.prepare_mask(m.astype(np.uint8)) > 0
        score_arr = np.asarray(scores, dtype=np.float64)
        size = (masks[0].shape[1], masks[0].shape[0]) if masks else None
        return ViewProposals(cam, masks=stack, ids=ids, scores=None if np.isnan(score_arr).all() else score_arr,
                             source=e.source, file_size=size)


# ---------------------------------------------------------------------------------------------------------
# Opening a path
# ---------------------------------------------------------------------------------------------------------
FORMATS = ("auto", "binary", "ids", "sam", "sam-tracked", "coco")


def _sam_files(folder: Path) -> list[tuple[int, str]]:
    """``<k>.png`` files of a SAM folder, by k (amg's ``<k>matting.png`` and other names are not masks)."""
    out = []
    for p in folder.iterdir():
        if is_image_file(p) and re.fullmatch(r"\d+", p.stem):
            out.append((int(p.stem), str(p)))
    return sorted(out)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: cannot read JSON ({type(e).__name__}: {e}); re-export the file") from None


def _is_sam_json(data: Any) -> bool:
    return isinstance(data, list) and all(isinstance(a, dict) and isinstance(a.get("segmentation"), dict)
                                          for a in data)


def _detect_kind(path: Path) -> str:
    """auto: a .json file -> coco; an image file -> png (one view); sub-folders of numbered PNGs -> sam;
    images -> png (binary or ids by content); one .json -> coco; several SAM-RLE .json -> sam."""
    if path.is_file():
        if path.suffix.lower() == ".json":
            return "coco"
        if is_image_file(path):
            return "png"
        raise UserError(f"{path}: a mask path must be a folder of masks, one mask image or a COCO .json file; "
                        "pass the folder")
    children = [p for p in path.iterdir() if not p.name.startswith(".")]
    if any(p.is_dir() and _sam_files(p) for p in children):
        return "sam"
    if any(is_image_file(p) for p in children):
        return "png"
    jsons = sorted(p for p in children if p.suffix.lower() == ".json")
    if len(jsons) == 1 and not _is_sam_json(_read_json(jsons[0])):
        return "coco"
    if jsons and _is_sam_json(_read_json(jsons[0])):
        return "sam"
    raise UserError(f"{path}: no mask images, SAM sub-folders or COCO .json found; pass the folder holding "
                    "the masks")


def _first_content_kind(entries: list[Entry]) -> str:
    """binary vs ids from the first non-empty lossless mask: more than two values or a value other than
    0/255 means ids. Reads files only until that mask (a photo there is a one-line error)."""
    for e in entries:
        if e.source.lower().endswith(LOSSY_EXTS):
            continue
        raw = read_label_png(e.source)
        if raw.dtype == np.uint8:
            check_not_photo(raw, e.source)
        vals = distinct_values(raw)
        if vals.size == 1 and vals[0] == 0:
            continue
        return "ids" if vals.size > 2 or not np.isin(vals, (0, 255)).all() else "binary"
    return "binary"


def open_mask_source(path: str | Path, cameras: Sequence[View], fmt: str = "auto",
                     labels: Optional[str | Iterable[Label]] = None, other_views: Sequence[str] = ()) -> MaskSource:
    """Index the masks at ``path`` for ``cameras``: a :class:`LabelMasks` or, for SAM automatic-mask output,
    a :class:`SamProposals` (``fmt="sam-tracked"`` reads SAM layouts as consistent ids instead).

    ``labels``: ids to keep, in priority order (``"3,7"``; COCO also category names); default all.
    Views without a mask and masks without a view are counted in one warning each; ``other_views`` (image
    names of the scene's views outside ``cameras``) turns "matches no view" into "belongs to another split".
    """
    path = Path(path)
    if fmt not in FORMATS:
        raise UserError(f"mask format {fmt!r}: unknown; use one of {', '.join(FORMATS)}")
    if not path.exists():
        raise UserError(f"{path}: mask path does not exist; pass the mask folder, a mask image or a COCO .json")
    if not cameras:
        raise UserError(f"{path}: no views to match masks to; check the scene's cameras")
    picked = parse_labels(labels)
    kind = _detect_kind(path) if fmt == "auto" else fmt
    n = len(cameras)

    if kind in ("png", "binary", "ids"):
        if path.is_file():
            if not is_image_file(path):
                raise UserError(f"{path}: not a mask image; pass a PNG/JPEG mask or a folder of them")
            files = [path]
        elif path.is_dir():
            files = sorted(p for p in path.iterdir() if is_image_file(p))
        else:
            raise UserError(f"{path}: {kind} masks are a folder of images or one image; pass that")
        claimed, skipped, unmatched = match(path, cameras, [(p.name, str(p)) for p in files])
        entries = [Entry(c, claimed[mk][1]) for c in cameras if (mk := _key(c)) in claimed]
        if path.is_dir() or len(cameras) > 1:
            warn_counts(path, n, skipped if path.is_dir() else [], unmatched, "mask files", other_views)
        auto = kind == "png"
        if auto:
            kind = "ids" if picked is not None else (
                "binary" if all(e.source.lower().endswith(LOSSY_EXTS) for e in entries)
                else _first_content_kind(entries))
        cls = BinaryMasks if kind == "binary" else IdMasks
        return cls(path, entries, skipped, unmatched, picked, auto=auto)

    if kind in ("sam", "sam-tracked"):
        if not path.is_dir():
            raise UserError(f"{path}: SAM masks are a folder of <image>/<k>.png folders (or <image>.json RLE "
                            "lists); pass that folder")
        children = sorted(p for p in path.iterdir() if not p.name.startswith("."))
        dirs = [p for p in children if p.is_dir()]
        jsons = [p for p in children if p.is_file() and p.suffix.lower() == ".json"] if not dirs else []
        if dirs:
            claimed, skipped, unmatched = match(path, cameras, [(p.name, p) for p in dirs])
            entries = [Entry(c, str(claimed[mk][1]), tuple(_sam_files(claimed[mk][1]))) for c in cameras
                       if (mk := _key(c)) in claimed]
        else:
            if kind == "sam-tracked":
                raise UserError(f"{path}: sam-tracked reads <image>/<k>.png folders; none found")
            claimed, skipped, unmatched = match(path, cameras, [(p.name, p) for p in jsons])
            entries = []
            for c in cameras:
                if (mk := _key(c)) in claimed:
                    data = _read_json(claimed[mk][1])
                    if not _is_sam_json(data):
                        raise UserError(f"{claimed[mk][1]}: not a SAM RLE list (a JSON list of objects with a "
                                        "'segmentation' RLE); re-export with amg.py --convert-to-rle")
                    entries.append(Entry(c, str(claimed[mk][1]), tuple(data)))
        warn_counts(path, n, skipped, unmatched, "SAM folders" if dirs else "SAM json files", other_views)
        if kind == "sam-tracked":
            return SamTrackedMasks(path, entries, skipped, unmatched, picked)
        if picked is not None:
            raise UserError(f"{path}: --labels picks ids, but SAM automatic-mask ids are numbered per image and "
                            "name unrelated regions in different views; name the object with --prompt VIEW:X,Y "
                            "(or pass --mask-format sam-tracked if the ids were tracked across views)")
        return SamProposals(path, entries, skipped, unmatched)

    # coco
    json_path = path
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix.lower() == ".json")
        if len(found) != 1:
            raise UserError(f"{path}: expected one COCO .json in the folder, found {len(found)}; pass the file")
        json_path = found[0]
    return _open_coco(json_path, cameras, picked, other_views)


def _key(cam: View) -> str:
    return match_key(cam.image_name)


def _open_coco(path: Path, cameras: Sequence[View], picked: Optional[list[Label]],
               other_views: Sequence[str] = ()) -> CocoMasks:
    data = _read_json(path)
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
    claimed, skipped, unmatched = match(path, cameras, candidates)
    entries = []
    for c in cameras:
        if (mk := _key(c)) in claimed:
            name, (image_id, size) = claimed[mk]
            entries.append(Entry(c, name, tuple(by_image.get(image_id, ())), size))
    categories = {}
    for cat in data.get("categories") or ():
        if isinstance(cat, dict) and isinstance(cat.get("id"), int) and isinstance(cat.get("name"), str):
            categories[cat["id"]] = cat["name"]
    warn_counts(path, len(cameras), skipped, unmatched, "COCO images", other_views)
    return CocoMasks(path, entries, skipped, unmatched, picked, category_names=categories)


def open_masks(path: str | Path, cameras: Sequence[View], fmt: str = "auto",
               labels: Optional[str | Iterable[Label]] = None, other_views: Sequence[str] = ()) -> LabelMasks:
    """Like :func:`open_mask_source`, for callers that need consistent label maps (evaluation, voting of
    given masks): SAM automatic-mask folders are refused with the fix (a prompt, or sam-tracked)."""
    src = open_mask_source(path, cameras, fmt, labels, other_views)
    if not isinstance(src, LabelMasks):
        raise UserError(f"{path}: SAM automatic-mask output (ids numbered per image, unrelated across views) "
                        "names no object by itself; segment it with segment.py --prompt VIEW:X,Y, or pass "
                        "--mask-format sam-tracked if the ids were tracked across views")
    return src
