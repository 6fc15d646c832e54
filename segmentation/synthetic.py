"""A small scene the project generates itself: several objects on a ground plane, orbiting cameras.

Used by ``python segment.py`` (the built-in demo) and by the tests, so the whole pipeline can be
exercised without any downloaded data. Every Gaussian knows which object it belongs to, which gives
exact ground truth for 2D masks (rendered from the object's Gaussians) and for 3D labels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from scene.cameras import Camera


@dataclass
class SyntheticScene:
    """Activated Gaussian parameters plus per-Gaussian object ids (0 = ground / background)."""

    means: np.ndarray      # [N, 3] float32
    scales: np.ndarray     # [N, 3] float32, activated (not log)
    quats: np.ndarray      # [N, 4] float32, wxyz, normalised
    opacities: np.ndarray  # [N] float32 in (0, 1)
    colors: np.ndarray     # [N, 3] float32 RGB in [0, 1]
    object_ids: np.ndarray  # [N] int32
    object_names: list[str]  # name of object id k at index k (index 0 = "background")
    cameras: list[Camera]


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray = np.array([0.0, 0.0, 1.0])) -> np.ndarray:
    """World-to-camera [4, 4] in OpenCV axes (x right, y down, z forward) for a camera at ``eye``."""
    forward = target - eye
    forward = forward / np.linalg.norm(forward)
    right = np.cross(forward, up)
    right = right / np.linalg.norm(right)
    down = np.cross(forward, right)
    rot = np.stack([right, down, forward])  # rows: camera axes in world coordinates
    w2c = np.eye(4)
    w2c[:3, :3] = rot
    w2c[:3, 3] = -rot @ eye
    return w2c


def orbit_cameras(num_views: int, size: int, radius: float = 4.0, height: float = 2.2,
                  fov_deg: float = 50.0, target: np.ndarray = np.zeros(3)) -> list[Camera]:
    """Cameras on a circle around ``target``, alternating two heights so views are not coplanar."""
    f = 0.5 * size / math.tan(math.radians(fov_deg) / 2)
    cams = []
    for i in range(num_views):
        a = 2 * math.pi * i / num_views
        h = height * (1.0 if i % 2 == 0 else 0.55)
        eye = np.array([radius * math.cos(a), radius * math.sin(a), h])
        cams.append(Camera(uid=i, image_name=f"view_{i:03d}", width=size, height=size, fx=f, fy=f,
                           cx=size / 2, cy=size / 2, world_to_camera=look_at(eye, target)))
    return cams


def _blob_sphere(rng: np.random.Generator, centre, radius, n):
    v = rng.normal(size=(n, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    r = radius * rng.uniform(0.0, 1.0, size=(n, 1)) ** (1 / 3)
    return np.asarray(centre) + v * r


def _blob_box(rng: np.random.Generator, centre, half, n):
    return np.asarray(centre) + rng.uniform(-1, 1, size=(n, 3)) * np.asarray(half)


def _blob_cylinder(rng: np.random.Generator, centre, radius, half_height, n):
    a = rng.uniform(0, 2 * math.pi, n)
    r = radius * np.sqrt(rng.uniform(0, 1, n))
    z = rng.uniform(-half_height, half_height, n)
    return np.asarray(centre) + np.stack([r * np.cos(a), r * np.sin(a), z], axis=1)


def make_demo_scene(num_views: int = 24, size: int = 128, points_per_object: int = 1500,
                    ground_points: int = 3000, seed: int = 0) -> SyntheticScene:
    """Three objects (red ball, blue box, green can) on a grey ground plane.

    Sizes are chosen so objects are clearly separated and partly occlude each other in some views.
    """
    rng = np.random.default_rng(seed)
    parts = [
        ("ground", np.c_[rng.uniform(-2.2, 2.2, (ground_points, 2)), np.zeros(ground_points)],
         np.array([0.55, 0.55, 0.5]), 0.07),
        ("ball", _blob_sphere(rng, [-0.8, -0.5, 0.55], 0.5, points_per_object), np.array([0.85, 0.15, 0.1]), 0.05),
        ("box", _blob_box(rng, [0.8, -0.3, 0.4], [0.35, 0.35, 0.4], points_per_object),
         np.array([0.1, 0.25, 0.85]), 0.05),
        ("can", _blob_cylinder(rng, [0.0, 0.9, 0.45], 0.3, 0.45, points_per_object),
         np.array([0.15, 0.7, 0.2]), 0.05),
    ]
    means, colors, scales, ids = [], [], [], []
    for k, (_, pts, rgb, s) in enumerate(parts):
        n = len(pts)
        means.append(pts)
        colors.append(np.clip(rgb + rng.normal(scale=0.05, size=(n, 3)), 0, 1))
        sc = np.full((n, 3), s) * rng.uniform(0.7, 1.3, size=(n, 3))
        if k == 0:
            sc[:, 2] *= 0.2  # flat ground splats
        scales.append(sc)
        ids.append(np.full(n, k))
    n_total = sum(len(m) for m in means)
    quats = rng.normal(size=(n_total, 4))
    quats /= np.linalg.norm(quats, axis=1, keepdims=True)
    ids_all = np.concatenate(ids).astype(np.int32)
    quats[ids_all == 0] = [1.0, 0.0, 0.0, 0.0]  # keep the ground flat
    return SyntheticScene(
        means=np.concatenate(means).astype(np.float32),
        scales=np.concatenate(scales).astype(np.float32),
        quats=quats.astype(np.float32),
        opacities=rng.uniform(0.6, 0.95, n_total).astype(np.float32),
        colors=np.concatenate(colors).astype(np.float32),
        object_ids=ids_all,
        object_names=["background"] + [p[0] for p in parts[1:]],
        cameras=orbit_cameras(num_views, size),
    )
