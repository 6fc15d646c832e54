"""Upsampled models for scale benchmarks: a trained model with every Gaussian split into ``s`` children.

Real captures trained on a GPU hold 1-6 M Gaussians; the scenes here hold ~50 k. Splitting each Gaussian
into ``s`` children drawn from its own distribution (centre + R·diag(scale)·z, z ~ N(0, I); log-scale
minus log(s)/3, so the children keep the parent's total volume; colour, opacity and rotation copied) gives
a model of the same scene with ``s`` times the Gaussians and a similar screen footprint per view, which is
what the rasterizer's cost follows. Shared by benchmarks/bench_scale.py and the rasterizer benchmarks.
"""
from __future__ import annotations

import math

import numpy as np

from utils.ply import GaussianPlyData

_CHUNK = 65536  # parents per batch: bounds the temporaries; fixed, so a seed always gives the same model


def _rotations(q: np.ndarray) -> np.ndarray:  # [M, 3, 3] float32
    """Rotation matrices of unnormalised (w, x, y, z) quaternions q [M, 4] (Inria's build_rotation)."""
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    return np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
                     2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
                     2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
                    axis=1).reshape(-1, 3, 3).astype(np.float32)


def upsample(gaussian_ply_data: GaussianPlyData, s: int, seed: int = 0) -> GaussianPlyData:
    """``s`` children per Gaussian (children of one parent are adjacent rows); s = 1 returns a copy.

    Deterministic for a given (input, s, seed).
    """
    g = gaussian_ply_data
    s = int(s)
    if s < 1:
        raise ValueError(f"s must be >= 1, got {s}")
    n = len(g)
    k = g.f_rest.shape[1]
    m = n * s
    out = GaussianPlyData(xyz=np.empty((m, 3), np.float32), f_dc=np.repeat(g.f_dc, s, axis=0),
                          f_rest=np.repeat(g.f_rest.reshape(n, k, 3), s, axis=0),
                          opacity=np.repeat(g.opacity, s, axis=0),
                          scale=np.repeat(g.scale, s, axis=0) - np.float32(math.log(s) / 3.0),
                          rotation=np.repeat(g.rotation, s, axis=0))
    if s == 1:
        out.xyz[:] = g.xyz
        out.scale[:] = g.scale
        return out
    rng = np.random.default_rng(seed)
    for a in range(0, n, _CHUNK):
        b = min(n, a + _CHUNK)
        rot = _rotations(np.asarray(g.rotation[a:b], np.float32))                 # [M, 3, 3]
        std = np.exp(np.asarray(g.scale[a:b], np.float32))                       # [M, 3]
        z = rng.standard_normal((b - a, s, 3), dtype=np.float32) * std[:, None]  # [M, s, 3]
        offset = np.einsum("mij,msj->msi", rot, z)                               # R · diag(scale) · z
        out.xyz[a * s:b * s] = (g.xyz[a:b, None, :] + offset).reshape(-1, 3)
    return out
