"""World frames of other trainers: similarity transforms, cameras moved between frames, gsplat's normalisation.

A model trained by nerfstudio (splatfacto) or gsplat lives in the frame its trainer moved the world to; its
cameras, read from the data folder, live in the data's frame. Everything here is a similarity
``x_model = s R x_data + t`` (a 4x4 ``[[s R, t], [0, 1]]``). Cameras are moved into the model's frame (not the
model into the cameras'), so the Gaussians, their SH coefficients and every PLY written from them stay
exactly in the user's model frame.

gsplat's normalisation is re-implemented from ``examples/datasets/normalize.py`` and the ``Parser`` of
``examples/datasets/colmap.py`` at gsplat commit 90d7b4b3 (2026-08, v1.5.3-670): ``similarity_from_cameras``
(up axis = mean camera up, centre = median of the camera rays' closest points to the origin, scale = 1 /
median camera distance), then ``align_principal_axes`` on the transformed COLMAP points (median centre,
PCA axes, smallest variance last), then, since gsplat 1.5.2 (commit e2d39525, 2025-04-21; sign fixed in
63494286), a 180° turn about x when the points' median z exceeds their mean z.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from scene.cameras import Camera


@dataclass(frozen=True)
class Similarity:
    """``x_to = scale * rotation @ x_from + translation``; ``rotation`` is orthogonal (a reflection is allowed:
    gsplat's rare fallback produces one)."""

    matrix: np.ndarray  # [4, 4] float64 [[s R, t], [0, 0, 0, 1]]

    @staticmethod
    def identity() -> "Similarity":
        return Similarity(np.eye(4))

    @staticmethod
    def from_matrix(m: np.ndarray, what: str = "transform", tol: float = 1e-4) -> "Similarity":
        """Check that ``m`` ([3, 4] or [4, 4]) is a similarity (uniform scale times an orthogonal matrix)."""
        m = np.asarray(m, dtype=np.float64)
        if m.shape == (3, 4):
            m = np.vstack([m, [0.0, 0.0, 0.0, 1.0]])
        if m.shape != (4, 4) or not np.isfinite(m).all() or not np.allclose(m[3], [0, 0, 0, 1]):
            raise ValueError(f"{what}: expected a finite 3x4 or 4x4 matrix with last row 0 0 0 1, got {m.shape}")
        a = m[:3, :3]
        s = abs(np.linalg.det(a)) ** (1.0 / 3.0)
        if not s > 0 or not np.allclose(a @ a.T / (s * s), np.eye(3), atol=tol):
            raise ValueError(f"{what}: not a similarity (uniform scale x rotation)")
        return Similarity(m)

    @property
    def scale(self) -> float:
        return float(abs(np.linalg.det(self.matrix[:3, :3])) ** (1.0 / 3.0))

    @property
    def rotation(self) -> np.ndarray:  # [3, 3]
        return self.matrix[:3, :3] / self.scale

    @property
    def translation(self) -> np.ndarray:  # [3]
        return self.matrix[:3, 3]

    def inverse(self) -> "Similarity":
        s, r, t = self.scale, self.rotation, self.translation
        m = np.eye(4)
        m[:3, :3] = r.T / s
        m[:3, 3] = -(r.T @ t) / s
        return Similarity(m)

    def then(self, other: "Similarity") -> "Similarity":
        """Apply ``self`` first, then ``other``."""
        return Similarity(other.matrix @ self.matrix)

    def apply(self, points: np.ndarray) -> np.ndarray:
        """points: [N, 3] → [N, 3] float64."""
        p = np.asarray(points, dtype=np.float64)
        return p @ self.matrix[:3, :3].T + self.matrix[:3, 3]

    def is_identity(self, tol: float = 1e-12) -> bool:
        return bool(np.allclose(self.matrix, np.eye(4), atol=tol, rtol=0.0))

    def describe(self) -> dict:
        """JSON-ready summary (summary.json, prune_report.json)."""
        return {"matrix": [[float(v) for v in row] for row in self.matrix], "scale": self.scale}


def move_camera(cam: Camera, sim: Similarity) -> Camera:
    """The same view with its extrinsics in the frame ``sim`` maps to.

    With x = S^-1(y): p_cam = R_c R^T (y - t) / s + t_c. Scaling the camera frame by s changes no pixel, so
    the new world-to-camera is [R_c R^T | s t_c - R_c R^T t]: a rigid camera, depths in the new frame's units;
    the near plane scales with them, so the moved camera renders the same picture.
    """
    s, r, t = sim.scale, sim.rotation, sim.translation
    w2c = np.asarray(cam.world_to_camera, dtype=np.float64)
    rot = w2c[:3, :3] @ r.T
    out = np.eye(4)
    out[:3, :3] = rot
    out[:3, 3] = s * w2c[:3, 3] - rot @ t
    return dataclasses.replace(cam, world_to_camera=out, znear=cam.znear * s)


def move_cameras(cameras: Sequence[Camera], sim: Similarity) -> list[Camera]:
    return list(cameras) if sim.is_identity() else [move_camera(c, sim) for c in cameras]


def camera_to_world(cameras: Sequence[Camera]) -> np.ndarray:
    """[N, 4, 4] float64 camera-to-world matrices, OpenCV axes (gsplat's ``camtoworlds``)."""
    return np.linalg.inv(np.stack([np.asarray(c.world_to_camera, dtype=np.float64) for c in cameras]))


# ----- gsplat (examples/datasets/normalize.py, colmap.py Parser) ------------------------------------------
def _rotation_onto(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """gsplat's R_align: Rodrigues' rotation taking unit vector ``a`` onto unit vector ``b``; for exactly
    opposite vectors gsplat uses diag(-1, 1, 1) (a reflection), kept here for fidelity."""
    c = float(a @ b)
    if c <= -1.0:
        return np.diag([-1.0, 1.0, 1.0])
    k = np.cross(a, b)
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + kx + kx @ kx / (1.0 + c)


def gsplat_camera_similarity(c2w: np.ndarray) -> np.ndarray:
    """gsplat's ``similarity_from_cameras`` (center "focus", median scaling). c2w: [N, 4, 4] OpenCV axes.
    Returns the [4, 4] matrix s [R | t]."""
    centres = c2w[:, :3, 3]
    down = np.array([0.0, -1.0, 0.0])
    up = (c2w[:, :3, :3] @ down).mean(axis=0)   # mean of the cameras' up axes (-y) in the world
    up = up / np.linalg.norm(up)
    r_align = _rotation_onto(up, down)
    fwd = np.einsum("ij,njk->nik", r_align, c2w[:, :3, :3])[:, :, 2]  # optical axes after the rotation
    centres = centres @ r_align.T
    focus = centres + np.sum(-centres * fwd, axis=1, keepdims=True) * fwd  # ray point closest to the origin
    shift = -np.median(focus, axis=0)
    m = np.eye(4)
    m[:3, :3] = r_align
    m[:3, 3] = shift
    m[:3, :] *= 1.0 / np.median(np.linalg.norm(centres + shift, axis=1))
    return m


def gsplat_principal_axes(points: np.ndarray) -> np.ndarray:
    """gsplat's ``align_principal_axes``: rigid [4, 4] moving the points' median to the origin and their
    principal axes (largest variance first) onto x, y, z, as a proper rotation. points: [P, 3]."""
    centre = np.median(points, axis=0)
    vals, vecs = np.linalg.eigh(np.cov(points - centre, rowvar=False))
    vecs = vecs[:, np.argsort(vals)[::-1]]
    if np.linalg.det(vecs) < 0:
        vecs[:, 0] = -vecs[:, 0]
    m = np.eye(4)
    m[:3, :3] = vecs.T
    m[:3, 3] = -vecs.T @ centre
    return m


def _apply(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ m[:3, :3].T + m[:3, 3]


GSPLAT_VARIANTS = ("gsplat>=1.5.2", "gsplat<1.5.2")
_FLIP_X = np.diag([1.0, -1.0, -1.0, 1.0])


def gsplat_normalization(c2w: np.ndarray, points: np.ndarray) -> dict[str, np.ndarray]:
    """The world normalisation of gsplat's COLMAP ``Parser(normalize=True)``, per gsplat version.

    c2w: [N, 4, 4] every registered image's camera-to-world (OpenCV axes), points: [P, 3] float32 COLMAP
    points. Returns {variant: [4, 4]}: "gsplat<1.5.2" is T2 @ T1, "gsplat>=1.5.2" adds the up-side-down
    turn T3 when gsplat's test (median z > mean z of the normalised points) fires; both are equal otherwise.
    """
    t1 = gsplat_camera_similarity(np.asarray(c2w, dtype=np.float64))
    p1 = _apply(t1, np.asarray(points))
    t2 = gsplat_principal_axes(p1)
    p2 = _apply(t2, p1)
    old = t2 @ t1
    new = _FLIP_X @ old if np.median(p2[:, 2]) > np.mean(p2[:, 2]) else old
    return {"gsplat>=1.5.2": new, "gsplat<1.5.2": old}


# ----- agreement of a model with its data ---------------------------------------------------------------
def alignment_error(means: np.ndarray, points: np.ndarray) -> float:
    """Median distance from Gaussian centres to the nearest data point, relative to the points' spread
    (median distance to their median). Trainers start the Gaussians on those points, so a model and data in
    one frame give a small value (0.059 for a model trained on beer), a wrong frame several (3.4 to 10.7).

    means: [N, 3] model frame; points: [P, 3] in the same frame.
    """
    from pykdtree.kdtree import KDTree

    pts = np.ascontiguousarray(points, dtype=np.float64)
    q = np.ascontiguousarray(means, dtype=np.float64)
    if len(pts) == 0 or len(q) == 0:
        return math.nan
    spread = float(np.median(np.linalg.norm(pts - np.median(pts, axis=0), axis=1)))
    dist, _ = KDTree(pts).query(q, k=1)
    return float(np.median(dist)) / max(spread, 1e-12)
