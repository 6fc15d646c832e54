"""Matching mask files (or SAM folders, COCO images) to views by image stem, and the warnings that count misses."""
from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any, Iterable, Optional, Protocol, Sequence, Union

import numpy as np

from utils.errors import UserError
from utils.masks.files import IMAGE_EXTS

MASK_SUFFIXES = ("_mask", "-mask", ".mask")
# Relative aspect-ratio difference between a mask and its view beyond which the mask is called stretched.
ASPECT_TOLERANCE = 0.01

Label = Union[int, str]


class View(Protocol):
    """What masks need of a camera (scene.cameras.Camera has it): its name, size and mask preparation."""

    uid: int
    image_name: str
    width: int
    height: int

    def prepare_mask(self, mask: np.ndarray) -> np.ndarray: ...


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


def view_keys(cameras: Sequence[View]) -> dict[str, list[View]]:
    keys: dict[str, list[View]] = {}
    for cam in cameras:
        keys.setdefault(match_key(cam.image_name), []).append(cam)
    return keys


def match(path: Path, cameras: Sequence[View], candidates: list[tuple[str, Any]],
          ) -> tuple[dict[str, tuple[str, Any]], list[str], list[str]]:
    """Match (display name, payload) candidates to views. Returns (view key → candidate, skipped view
    names, unmatched candidate names); raises on zero matches, duplicates and ambiguous view names."""
    keys = view_keys(cameras)
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


def warn_counts(path: Path, n_views: int, skipped: list[str], unmatched: list[str], what: str,
                other_views: Sequence[str] = (), stacklevel: int = 4) -> None:
    """One counted warning each for views without a mask, masks of another split and masks of no view."""
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


def stretched(mw: int, mh: int, w: int, h: int) -> bool:
    """Whether a mw x mh mask and a w x h view differ in aspect ratio by more than ASPECT_TOLERANCE plus
    what rounding either size to whole pixels explains (|w·mh − h·mw| ≤ ½(max(mw, w) + max(mh, h)))."""
    slack = ASPECT_TOLERANCE * w * mh + 0.5 * (max(mw, w) + max(mh, h))
    return abs(w * mh - h * mw) > slack
