"""Small numeric helpers shared by the Gaussian model and the renderer (Inria's general_utils, device-free).

Conventions: quaternions are (w, x, y, z) and need not be normalised; covariances are stored as the six
upper-triangle entries (xx, xy, xz, yy, yz, zz) like Inria's ``strip_symmetric``.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import Tensor


def inverse_sigmoid(x: Tensor) -> Tensor:
    """logit; opacities are stored as logits so the optimiser works on an unbounded value."""
    return torch.log(x / (1 - x))


def get_expon_lr_func(lr_init: float, lr_final: float, lr_delay_steps: int = 0, lr_delay_mult: float = 1.0,
                      max_steps: int = 1_000_000) -> Callable[[int], float]:
    """Inria's (Plenoxels') schedule: log-linear from ``lr_init`` to ``lr_final`` over ``max_steps``.

    With ``lr_delay_steps > 0`` the rate is additionally damped by a sine ramp from ``lr_delay_mult`` to 1
    over the first ``lr_delay_steps`` steps. A negative step or both rates zero gives 0 (parameter frozen).
    """

    def helper(step: int) -> float:
        if step < 0 or (lr_init == 0.0 and lr_final == 0.0):
            return 0.0
        if lr_delay_steps > 0:
            delay_rate = lr_delay_mult + (1 - lr_delay_mult) * np.sin(
                0.5 * np.pi * np.clip(step / lr_delay_steps, 0, 1))
        else:
            delay_rate = 1.0
        t = np.clip(step / max_steps, 0, 1)
        log_lerp = np.exp(np.log(lr_init) * (1 - t) + np.log(lr_final) * t)
        return float(delay_rate * log_lerp)

    return helper


def build_rotation(r: Tensor) -> Tensor:
    """Rotation matrices from quaternions.

    r: Tensor  # [N, 4] (w, x, y, z), any norm > 0
    returns Tensor  # [N, 3, 3]
    """
    q = torch.nn.functional.normalize(r, dim=-1)
    w, x, y, z = q.unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]
    return torch.stack(rows, dim=-1).reshape(r.shape[:-1] + (3, 3))


def build_scaling_rotation(s: Tensor, r: Tensor) -> Tensor:
    """L = R·diag(s), so the covariance is L·Lᵀ.

    s: Tensor  # [N, 3] activated scales
    r: Tensor  # [N, 4] quaternions (w, x, y, z)
    returns Tensor  # [N, 3, 3]
    """
    return build_rotation(r) * s[:, None, :]


def strip_symmetric(m: Tensor) -> Tensor:
    """Upper triangle of symmetric 3x3 matrices.

    m: Tensor  # [N, 3, 3]
    returns Tensor  # [N, 6] (xx, xy, xz, yy, yz, zz)
    """
    return torch.stack([m[:, 0, 0], m[:, 0, 1], m[:, 0, 2], m[:, 1, 1], m[:, 1, 2], m[:, 2, 2]], dim=-1)


def mean_sq_knn_dist(points: np.ndarray, k: int = 3) -> np.ndarray:
    """simple-knn's ``distCUDA2`` on the CPU: mean SQUARED distance to the ``k`` nearest other points.

    A KD-tree query with k+1 neighbours includes the point itself at distance 0; dropping that column gives
    the same multiset of distances even when points are duplicated (a duplicate is also at distance 0).
    With fewer than k other points the mean is over those that exist; a lone point gets 0 (the caller
    clamps, like Inria's ``clamp_min(dist2, 1e-7)``).

    points: np.ndarray  # [P, 3]
    returns np.ndarray  # [P] float32
    """
    from pykdtree.kdtree import KDTree

    pts = np.ascontiguousarray(points, dtype=np.float64)
    n = pts.shape[0]
    if n <= 1:
        return np.zeros(n, dtype=np.float32)
    kk = min(k + 1, n)
    d2, _ = KDTree(pts).query(pts, k=kk, sqr_dists=True)
    d2 = np.asarray(d2, dtype=np.float64).reshape(n, kk)
    return d2[:, 1:].mean(axis=1).astype(np.float32)
