"""Reading one mask image: label values, binary masks (any channel, or alpha), and telling a mask from a photo."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from utils.errors import UserError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
LOSSY_EXTS = (".jpg", ".jpeg", ".webp")


def is_image_file(p: Path) -> bool:
    return p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTS


def open_image(path: str | Path) -> Any:
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


def _alpha_only(colour: np.ndarray, alpha: np.ndarray) -> bool:
    """True when the colour channels carry no mask (one colour everywhere) but the alpha channel does."""
    flat = colour.reshape(-1, colour.shape[-1]) if colour.ndim == 3 else colour.reshape(-1, 1)
    return bool((flat == flat[0]).all()) and alpha.min() != alpha.max()


def read_label_png(path: str | Path) -> np.ndarray:  # [H, W] uint8 | uint16 | int32
    """Raw integer labels of a mask image, values unchanged (0 = background).

    Grey 8/16-bit → values; palette PNG → palette indices (DAVIS/VOC style); RGB(A) whose channels are
    equal → the first channel; other RGB(A) → colour code ``R << 16 | G << 8 | B`` (int32). RGBA / LA
    images whose colour channels hold one colour everywhere while alpha varies → the alpha channel (a
    cut-out PNG). Reused by evaluation to read ground-truth label maps.
    """
    img = open_image(path)
    mode = img.mode
    if mode in ("1", "L", "P"):
        return np.asarray(img, dtype=np.uint8)
    if mode.startswith("I;16"):
        return np.asarray(img).astype(np.uint16)
    if mode == "I":
        arr = np.asarray(img)
        return arr.astype(np.uint16) if arr.min() >= 0 and arr.max() <= 65535 else arr.astype(np.int32)
    if mode == "LA":
        arr = np.asarray(img)
        return np.ascontiguousarray(arr[..., 1] if _alpha_only(arr[..., 0], arr[..., 1]) else arr[..., 0])
    if mode in ("RGB", "RGBA"):
        arr = np.asarray(img)
        rgb = arr[..., :3]
        if mode == "RGBA" and _alpha_only(rgb, arr[..., 3]):
            return np.ascontiguousarray(arr[..., 3])
        if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 0] == rgb[..., 2]).all():
            return np.ascontiguousarray(rgb[..., 0])
        rgb = rgb.astype(np.int32)
        return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    raise UserError(f"{path}: unsupported image mode {mode!r} for a label map; save it as an 8/16-bit grey "
                    "or palette PNG")


def read_mask_bits(path: str | Path) -> tuple[np.ndarray, bool]:
    """(inside [H, W] bool, whether every value was exactly 0 or full scale) of a binary mask.

    Inside = any colour channel > 127 (16-bit: > 32767); a green mask on black is a mask. RGBA / LA images
    whose colour channels hold one colour everywhere use the alpha channel instead (cut-out PNGs).
    Raises a UserError for an image that looks like a photograph (see :func:`looks_like_photo`).
    """
    img = open_image(path)
    mode = img.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(img)
        full = 65535 if (mode != "F" and arr.max() > 255) else 255
        if mode == "F" and arr.max() <= 1.0:
            full = 1
        return arr > full / 2, bool(np.isin(arr, (0, full)).all())
    if mode in ("1", "L"):
        arr = np.asarray(img.convert("L"))
    elif mode in ("LA", "RGBA", "PA") or (mode == "P" and "transparency" in img.info):
        full = np.asarray(img.convert("RGBA"))
        colour, alpha = full[..., :3].max(axis=2), full[..., 3]
        arr = alpha if _alpha_only(full[..., :3], alpha) else colour
    else:  # P, RGB, CMYK, YCbCr: any colour channel counts
        arr = np.asarray(img.convert("RGB")).max(axis=2)
    check_not_photo(np.asarray(img.convert("RGB")) if mode not in ("1", "L") else arr, path)
    return arr > 127, bool(((arr == 0) | (arr == 255)).all())


def read_binary_mask(path: str | Path) -> np.ndarray:  # [H, W] bool
    """Inside = any colour channel > 127 (16-bit: > 32767); alpha when the colour channels carry none."""
    return read_mask_bits(path)[0]


# A mask is piecewise constant: neighbouring pixels rarely differ. A photograph's values change from pixel to
# pixel (texture, noise, JPEG). Measured on ../shared/data (first images): photos have 24-100 % mid-tone
# pixels and 24-89 % of horizontal neighbours that differ (maryRose 70-74 %, lego 24-36 %, beer 25-30 %,
# fern 88-89 %); maryRose's masks 1 %, the same masks saved as JPEG q75 9 %, an id map 1 %.
PHOTO_MID_FRACTION = 0.2         # pixels with a mid-tone value (16..239) in some channel
PHOTO_NEIGHBOUR_FRACTION = 0.15  # horizontal neighbours that differ in some channel


def photo_statistics(arr: np.ndarray) -> tuple[float, float]:
    """(fraction of mid-tone pixels, fraction of horizontal neighbours that differ) of an 8-bit image.

    arr: np.ndarray  # [H, W] or [H, W, C] uint8
    """
    a = np.asarray(arr)
    if a.dtype != np.uint8 or a.size == 0:
        return 0.0, 0.0
    if a.ndim == 2:
        a = a[..., None]
    mid = float(((a > 15) & (a < 240)).any(axis=2).mean())
    if a.shape[1] < 2:
        return mid, 0.0
    diff = np.abs(a[:, 1:].astype(np.int16) - a[:, :-1].astype(np.int16)).max(axis=2)
    return mid, float((diff > 0).mean())


def looks_like_photo(arr: np.ndarray) -> bool:
    mid, neigh = photo_statistics(arr)
    return mid > PHOTO_MID_FRACTION and neigh > PHOTO_NEIGHBOUR_FRACTION


def check_not_photo(arr: np.ndarray, path: str | Path) -> None:
    """One-line UserError when ``arr`` (the decoded file) is a photograph rather than a mask."""
    if looks_like_photo(arr):
        mid, neigh = photo_statistics(arr)
        raise UserError(f"{path}: looks like a photograph, not a mask ({100 * mid:.0f} % mid-tone pixels, "
                        f"{100 * neigh:.0f} % of neighbouring pixels differ); --masks takes 0/255 or id masks "
                        "(the photos belong to the scene, -s)")


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


def distinct_values(raw: np.ndarray) -> np.ndarray:  # sorted distinct values of a label image
    if raw.dtype in (np.uint8, np.uint16):
        return np.flatnonzero(np.bincount(raw.ravel(), minlength=1))
    return np.unique(raw)
