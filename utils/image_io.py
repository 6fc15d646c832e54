"""Image decoding and the one pixel pipeline shared by images and masks.

Images and masks of a view must land on exactly the same pixels, so both go through
:func:`prepare_pixels`: resize to the camera's size (area for images, nearest for masks), then undo the
camera's lens distortion with the same cached OpenCV maps (linear for images, nearest for masks).
Headers are read without decoding (:func:`read_image_size`) so scenes with hundreds of views load instantly.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from utils.errors import UserError


# A camera here is duck-typed (scene.cameras.Camera; utils/ sits below scene/): width, height, fx, fy, cx, cy,
# distortion (None, or lens distortion with .coeffs in OpenCV order) and background ([3] RGB in [0, 1]).
PixelGrid = Any

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
_FIX = "replace the file or remove it from the scene"


def read_image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) from the file header only; no pixel is decoded."""
    try:
        with Image.open(path) as im:
            return int(im.size[0]), int(im.size[1])
    except FileNotFoundError:
        raise UserError(f"{path}: image not found; copy it there or fix the scene's image list") from None
    except (UnidentifiedImageError, OSError) as e:
        raise UserError(f"{path}: not a readable image ({e}); {_FIX}") from None


def read_image(path: str | Path) -> np.ndarray:
    """Decode to [H, W, C] uint8 with C = 3 (RGB) or 4 (RGBA). Grey becomes RGB, 16-bit is scaled to 8-bit.

    EXIF orientation is NOT applied, like Inria and COLMAP, so poses stay valid for the stored pixel grid.
    """
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.float64)
                peak = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
                grey = np.clip(np.round(arr * (255.0 / peak)), 0, 255).astype(np.uint8)
                return np.repeat(grey[..., None], 3, axis=2)
            has_alpha = mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in im.info)
            target = "RGBA" if has_alpha else "RGB"
            if mode != target:
                im = im.convert(target)
            return np.asarray(im, dtype=np.uint8).copy()
    except FileNotFoundError:
        raise UserError(f"{path}: image not found; copy it there or fix the scene's image list") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise UserError(f"{path}: cannot decode image ({e}); {_FIX}") from None


@functools.lru_cache(maxsize=8)
def _undistort_maps(width: int, height: int, fx: float, fy: float, cx: float, cy: float,
                    coeffs: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """For each output (pinhole) pixel, where to sample the distorted input. Same K in and out.

    OpenCV puts pixel centres at integers, COLMAP at +0.5: the principal point is shifted by -0.5 so the
    distortion centre is the same point of the image in both conventions.
    """
    K = np.array([[fx, 0.0, cx - 0.5], [0.0, fy, cy - 0.5], [0.0, 0.0, 1.0]])
    map_x, map_y = cv2.initUndistortRectifyMap(K, np.asarray(coeffs, np.float64), None, K, (width, height),
                                               cv2.CV_32FC1)
    map_x.setflags(write=False)
    map_y.setflags(write=False)
    return map_x, map_y


def undistortion_maps(camera: PixelGrid) -> tuple[np.ndarray, np.ndarray]:
    """(map_x, map_y) [height, width] float32 for cv2.remap; cached per intrinsics and size."""
    assert camera.distortion is not None
    return _undistort_maps(int(camera.width), int(camera.height), float(camera.fx), float(camera.fy),
                           float(camera.cx), float(camera.cy), tuple(float(c) for c in camera.distortion.coeffs))


# dtypes cv2.resize/remap handle with nearest interpolation; others go through float64 (exact below 2**53)
_CV_DTYPES = (np.uint8, np.uint16, np.int16, np.float32, np.float64)


def _mask_to_cv(mask: np.ndarray) -> np.ndarray:
    if mask.dtype == np.bool_:
        return mask.astype(np.uint8)
    if mask.dtype.type in _CV_DTYPES:
        return mask
    return mask.astype(np.float64)


def prepare_pixels(arr: np.ndarray, camera: PixelGrid, is_mask: bool) -> np.ndarray:
    """Raw pixels at any size → the camera's pixel grid.

    arr: images [H, W] or [H, W, 3|4], uint8/uint16/float (floats in [0, 1]); masks [H, W] (or [H, W, 1]) of
    any integer/bool/float dtype.
    Returns images as [height, width, 3] float32 in [0, 1], RGBA composited on ``camera.background``;
    masks as [height, width] with the input dtype (labels are never blended).
    """
    size = (int(camera.width), int(camera.height))
    if is_mask:
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[..., 0]
        if arr.ndim != 2:
            raise ValueError(f"mask must be [H, W], got shape {arr.shape}")
        work = _mask_to_cv(np.ascontiguousarray(arr))
        if (work.shape[1], work.shape[0]) != size:
            work = cv2.resize(work, size, interpolation=cv2.INTER_NEAREST_EXACT)
        if camera.distortion is not None:
            map_x, map_y = undistortion_maps(camera)
            work = cv2.remap(work, map_x, map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)
        return work.astype(arr.dtype) if arr.dtype != np.bool_ else work > 0

    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ValueError(f"image must be [H, W, 1|3|4], got shape {arr.shape}")
    if arr.dtype == np.uint8:
        img = arr.astype(np.float32) * np.float32(1 / 255)
    elif arr.dtype == np.uint16:
        img = arr.astype(np.float32) * np.float32(1 / 65535)
    else:
        img = arr.astype(np.float32)
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    if img.shape[2] == 4:
        # Premultiply so that resampling then compositing equals compositing at full resolution.
        img = np.concatenate([img[..., :3] * img[..., 3:], img[..., 3:]], axis=2)
    if (img.shape[1], img.shape[0]) != size:
        img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    if camera.distortion is not None:
        map_x, map_y = undistortion_maps(camera)
        img = cv2.remap(img, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if img.shape[2] == 4:
        bg = np.asarray(camera.background, dtype=np.float32)
        img = img[..., :3] + bg * (1.0 - img[..., 3:])
    return np.clip(img, 0.0, 1.0, out=img)
