"""Object-only reconstruction: every view's pixels outside its binary mask become the background colour.

For object captures whose surroundings are not static relative to the object (turntables, an object turned
over between sessions, a ruler moved beside it) the background contradicts the poses and no 3DGS can fit
it; with ``--object_masks`` the images become RGBA (alpha = mask) and are composited on the scene background
exactly like NeRF-synthetic's, in training and in render.py's ground truth alike.
"""
from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np

from scene.cameras import Camera
from scene.types import SceneInfo
from utils.errors import UserError


def _rgba_loader(cam: Camera, mask_path: str):
    """A loader returning the view's raw pixels with alpha = its mask (resized to the raw image)."""
    from utils.masks import read_binary_mask, resize_nearest

    def load() -> np.ndarray:  # [H, W, 4] uint8
        raw = cam.read_raw()
        if raw.dtype != np.uint8:
            raise UserError(f"{cam.image_path}: --object_masks needs 8-bit images, got {raw.dtype}")
        if raw.ndim == 2:
            raw = np.repeat(raw[..., None], 3, axis=2)
        mask = resize_nearest(read_binary_mask(mask_path), raw.shape[1], raw.shape[0])
        alpha = mask.astype(np.uint8) * 255
        if raw.shape[2] == 4:  # an RGBA image keeps its own transparency inside the mask
            alpha = np.minimum(alpha, raw[..., 3])
        return np.concatenate([raw[..., :3], alpha[..., None]], axis=2)

    return load


def apply_object_masks(info: SceneInfo, masks: str | Path) -> SceneInfo:
    """``info`` with every view reading RGBA images whose alpha is its mask from the folder ``masks``.

    Every view (both splits) must have a mask: an evaluation against unmasked ground truth would be
    meaningless, so a missing mask is a UserError naming the view.
    """
    from utils.masks import open_masks

    cams = list(info.train_cameras) + list(info.test_cameras)
    path = Path(masks)
    if path.exists() and not path.is_dir():
        raise UserError(f"{path}: --object_masks takes a folder of mask images (one per view, same stem)")
    with warnings.catch_warnings():   # a missing mask is the error below, not a "skipped" warning first
        warnings.simplefilter("ignore")
        mset = open_masks(path, cams, fmt="binary")
    out = []
    for cam in cams:
        src = mset.source_of(cam.image_name)
        if src is None:
            raise UserError(f"{path}: no mask for view {cam.image_name}; --object_masks needs one mask per "
                            f"view ({len(mset)} of {len(cams)} found)")
        out.append(dataclasses.replace(cam, loader=_rgba_loader(cam, src)))
    n = len(info.train_cameras)
    return dataclasses.replace(info, train_cameras=out[:n], test_cameras=out[n:])
