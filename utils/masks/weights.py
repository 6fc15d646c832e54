"""Vote weights from label maps, and labels from votes (the two ends of gradient voting)."""
from __future__ import annotations

from typing import Any

import numpy as np


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
