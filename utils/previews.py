"""Pictures of label maps for people to look at: the label palette, a tinted and outlined overlay, a caption,
and which few views to show. Shared by every job that writes previews (segmentation, features, affordance).

Pure numpy / OpenCV on uint8 images; rendering the pictures is the jobs' business (they own the renderer).
"""
from __future__ import annotations

import numpy as np

# Label colours for overlays (label l uses PALETTE[(l - 1) % len]); tab10 without grey.
PALETTE = np.array([[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
                    [140, 86, 75], [227, 119, 194], [188, 189, 34], [23, 190, 207]], dtype=np.uint8)


def label_colour(labels: np.ndarray) -> np.ndarray:  # [..., 3] uint8
    """PALETTE colour of each label >= 1. labels: np.ndarray  # [...] int >= 1"""
    return PALETTE[(np.asarray(labels) - 1) % len(PALETTE)]


def to_uint8(img: np.ndarray) -> np.ndarray:
    """img: [H, W, 3] float in [0, 1] -> uint8 (clamped, rounded half up)."""
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def overlay(rgb: np.ndarray, label_map: np.ndarray, strength: float = 0.55) -> np.ndarray:  # [H, W, 3] uint8
    """Tint each labelled pixel with its label colour and outline the labels.

    rgb: [H, W, 3] uint8; label_map: [H, W] int (0 = background)
    """
    import cv2

    out = rgb.astype(np.float32)
    lm = np.asarray(label_map)
    inside = lm > 0
    if inside.any():
        colours = label_colour(lm[inside]).astype(np.float32)
        out[inside] = (1 - strength) * out[inside] + strength * colours
        edges = cv2.morphologyEx(inside.astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
        out[edges & inside] = label_colour(lm[edges & inside])
    return out.astype(np.uint8)


def caption(img: np.ndarray, text: str) -> np.ndarray:
    """White text with a black outline in the top-left corner (readable on any image). img: [H, W, 3] uint8."""
    import cv2

    img = img.copy()
    scale = max(0.35, img.shape[1] / 400.0)
    thick = max(1, int(round(scale * 1.5)))
    org = (4, int(14 * scale) + 2)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick + 2, cv2.LINE_AA)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick, cv2.LINE_AA)
    return img


def evenly_spaced(n: int, k: int) -> list[int]:
    """k indices spread evenly over range(n), first and last included (all of them when k >= n)."""
    if k <= 0 or n <= 0:
        return []
    if k >= n:
        return list(range(n))
    return sorted({int(round(x)) for x in np.linspace(0, n - 1, k)})
