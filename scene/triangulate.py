"""Sparse points for scenes that come with poses but no points (LLFF without ``sparse/``, maryRose).

What COLMAP's ``point_triangulator`` does for a known-pose reconstruction, in small: SIFT features in every
training view, ratio-test matches between views that look at the scene from nearby directions, matches kept
only when they agree with the known epipolar geometry, matches chained into tracks (union-find), and one
linear triangulation per track, kept when it lies in front of every camera of the track, reprojects within
``max_reproj_px`` in all of them and is seen under a wide enough angle. Colours are the track's mean pixel.

A 3DGS run started from these points converges like one started from SfM points; random points spend the
short CPU schedules finding the surface (training/README.md has the maryRose numbers).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

import numpy as np

from scene.cameras import Camera, ImageCache
from scene.types import BasicPointCloud

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TriangulationConfig:
    """Matching and filtering thresholds (pixels are at the training resolution)."""

    max_features: int = 8000          # SIFT keypoints per view
    upscale: int = 2                  # SIFT on the view enlarged this much (small training images; at 1,
                                      # OpenCV's own octave doubling biases keypoints by ~0.2 px)
    contrast_threshold: float = 0.02  # SIFT's (OpenCV default 0.04): more keypoints on low-contrast texture
    neighbours: int = 8               # views matched with each view (closest viewing directions)
    max_view_angle_deg: float = 60.0  # never match views whose optical axes differ by more
    ratio: float = 0.8                # Lowe's ratio test
    max_epipolar_px: float = 1.5      # Sampson distance to the known epipolar geometry
    max_reproj_px: float = 2.0        # reprojection error of the triangulated point, in every view of its track
    min_angle_deg: float = 1.5        # widest ray angle of a track must reach this
    outlier_neighbours: int = 8       # statistical outlier removal: mean distance to this many neighbours ...
    outlier_std: float = 2.0          # ... above mean + outlier_std x std drops the point (0: keep all)


def _gray_u8(img: np.ndarray) -> np.ndarray:
    """[H, W, 3] float in [0, 1] → [H, W] uint8."""
    g = img[..., 0] * 0.299 + img[..., 1] * 0.587 + img[..., 2] * 0.114
    return np.clip(g * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _intrinsics(cam: Camera) -> np.ndarray:  # [3, 3]
    return np.array([[cam.fx, 0.0, cam.cx], [0.0, cam.fy, cam.cy], [0.0, 0.0, 1.0]])


def _projection(cam: Camera) -> np.ndarray:  # [3, 4] pixels (COLMAP convention) from world
    return _intrinsics(cam) @ cam.world_to_camera[:3, :4]


def fundamental_matrix(a: Camera, b: Camera) -> np.ndarray:
    """F with x_b^T F x_a = 0 for pixel coordinates of the two views."""
    rel = b.world_to_camera @ np.linalg.inv(a.world_to_camera)   # a's camera frame → b's
    R, t = rel[:3, :3], rel[:3, 3]
    tx = np.array([[0.0, -t[2], t[1]], [t[2], 0.0, -t[0]], [-t[1], t[0], 0.0]])
    return np.linalg.inv(_intrinsics(b)).T @ tx @ R @ np.linalg.inv(_intrinsics(a))


def sampson_distance(F: np.ndarray, xa: np.ndarray, xb: np.ndarray) -> np.ndarray:
    """Sampson distance (pixels) of matches xa [M, 2] ↔ xb [M, 2] to F."""
    ha = np.concatenate([xa, np.ones((len(xa), 1))], axis=1)
    hb = np.concatenate([xb, np.ones((len(xb), 1))], axis=1)
    Fa = ha @ F.T
    Fb = hb @ F
    num = np.einsum("ij,ij->i", hb, Fa)
    den = Fa[:, 0] ** 2 + Fa[:, 1] ** 2 + Fb[:, 0] ** 2 + Fb[:, 1] ** 2
    return np.abs(num) / np.sqrt(np.maximum(den, 1e-12))


def _view_pairs(cameras: list[Camera], k: int, max_angle_deg: float) -> list[tuple[int, int]]:
    """Each view with its ``k`` views of closest viewing direction (under ``max_angle_deg``), deduplicated."""
    axes = np.stack([c.R[2] for c in cameras])        # optical axis in world coordinates
    cos = np.clip(axes @ axes.T, -1.0, 1.0)
    np.fill_diagonal(cos, -2.0)
    pairs = set()
    for i in range(len(cameras)):
        order = np.argsort(-cos[i])[:k]
        for j in order:
            if cos[i, j] >= np.cos(np.radians(max_angle_deg)):
                pairs.add((min(i, int(j)), max(i, int(j))))
    return sorted(pairs)


class _UnionFind:
    def __init__(self, n: int):
        self.parent = np.arange(n)

    def find(self, x: int) -> int:
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _triangulate_track(P: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Linear (DLT) triangulation. P: [V, 3, 4], x: [V, 2] → [3] world point."""
    A = np.concatenate([x[:, 0:1] * P[:, 2] - P[:, 0], x[:, 1:2] * P[:, 2] - P[:, 1]], axis=0)  # [2V, 4]
    A /= np.linalg.norm(A, axis=1, keepdims=True)
    _, _, vt = np.linalg.svd(A)
    X = vt[-1]
    return X[:3] / X[3] if abs(X[3]) > 1e-12 else np.full(3, np.nan)


def _inliers(xyz: np.ndarray, k: int, n_std: float) -> np.ndarray:
    """Statistical outlier removal (as in PCL/Open3D). xyz: [P, 3] → keep mask [P].

    A wrong match that passes the epipolar test triangulates far from the surface, alone; such points
    start huge Gaussians (Inria sizes them by neighbour distance) that cover whole views and slow every
    iteration.
    """
    from pykdtree.kdtree import KDTree

    pts = np.ascontiguousarray(xyz, dtype=np.float64)
    dist, _ = KDTree(pts).query(pts, k=k + 1)
    m = dist[:, 1:].mean(axis=1)
    return m <= m.mean() + n_std * m.std()


def sift_features(img: np.ndarray, cfg: TriangulationConfig = TriangulationConfig()
                  ) -> tuple[np.ndarray, np.ndarray]:
    """SIFT keypoints of one view. img: [H, W, 3] float in [0, 1] → (xy [K, 2] pixels in COLMAP's
    convention (pixel centres at +0.5, as Camera.project), descriptors [K, 128] float32)."""
    import cv2  # opencv-python-headless; imported here so scenes with points never load it

    sift = cv2.SIFT_create(nfeatures=cfg.max_features, contrastThreshold=cfg.contrast_threshold)
    gray = _gray_u8(img)
    if cfg.upscale > 1:
        gray = cv2.resize(gray, None, fx=cfg.upscale, fy=cfg.upscale, interpolation=cv2.INTER_CUBIC)
    k, d = sift.detectAndCompute(gray, None)
    # OpenCV puts pixel centres at integers, COLMAP at +0.5.
    xy = (np.array([p.pt for p in k], dtype=np.float64).reshape(-1, 2) + 0.5) / cfg.upscale
    return xy, (d if d is not None else np.zeros((0, 128), np.float32))


def ratio_matches(desc_a: np.ndarray, desc_b: np.ndarray, ratio: float) -> np.ndarray:
    """Lowe ratio-test matches a → b as index pairs [M, 2] (int64; empty when none)."""
    import cv2

    if len(desc_a) < 2 or len(desc_b) < 2:
        return np.zeros((0, 2), np.int64)
    knn = cv2.BFMatcher(cv2.NORM_L2).knnMatch(desc_a, desc_b, k=2)
    good = [(m.queryIdx, m.trainIdx) for m, n in (p for p in knn if len(p) == 2) if m.distance < ratio * n.distance]
    return np.array(good, dtype=np.int64).reshape(-1, 2)


def triangulate_points(cameras: list[Camera], cache: Optional[ImageCache] = None,
                       cfg: TriangulationConfig = TriangulationConfig(),
                       progress: bool = False) -> BasicPointCloud:
    """Triangulated SIFT tracks of ``cameras`` (with known poses) as a coloured point cloud (maybe empty)."""
    from tqdm import tqdm

    images, kps, descs = [], [], []
    for cam in tqdm(cameras, desc="SIFT features", leave=False, disable=not progress):
        img = cache.get(cam) if cache is not None else cam.prepare_image(cam.read_raw())
        xy, d = sift_features(img, cfg)
        images.append(img)
        kps.append(xy)
        descs.append(d)
    offsets = np.concatenate([[0], np.cumsum([len(k) for k in kps])])
    uf = _UnionFind(int(offsets[-1]))

    pairs = _view_pairs(cameras, cfg.neighbours, cfg.max_view_angle_deg)
    n_matches = 0
    for a, b in tqdm(pairs, desc="matching view pairs", leave=False, disable=not progress):
        good = ratio_matches(descs[a], descs[b], cfg.ratio)
        if not len(good):
            continue
        ia, ib = good.T
        d = sampson_distance(fundamental_matrix(cameras[a], cameras[b]), kps[a][ia], kps[b][ib])
        keep = d < cfg.max_epipolar_px
        for u, v in zip(ia[keep], ib[keep]):
            uf.union(int(offsets[a] + u), int(offsets[b] + v))
        n_matches += int(keep.sum())

    # Tracks: nodes grouped by root; a track with two keypoints in one view is ambiguous and dropped.
    view_of = np.repeat(np.arange(len(cameras)), np.diff(offsets))
    roots = np.array([uf.find(i) for i in range(len(view_of))], dtype=np.int64)
    order = np.argsort(roots, kind="stable")
    bounds = np.flatnonzero(np.diff(roots[order])) + 1
    Ps = np.stack([_projection(c) for c in cameras])          # [V, 3, 4]
    centres = np.stack([c.camera_center for c in cameras])    # [V, 3]
    points, colors = [], []
    min_cos = np.cos(np.radians(cfg.min_angle_deg))
    for group in np.split(order, bounds):
        if len(group) < 2:
            continue
        views = view_of[group]
        if len(np.unique(views)) != len(views):
            continue
        xy = np.concatenate([kps[v][i - offsets[v]][None] for v, i in zip(views, group)])  # [T, 2]
        X = _triangulate_track(Ps[views], xy)
        if not np.all(np.isfinite(X)):
            continue
        h = Ps[views] @ np.append(X, 1.0)                     # [T, 3]
        if np.any(h[:, 2] <= 0):
            continue
        err = np.linalg.norm(h[:, :2] / h[:, 2:3] - xy, axis=1)
        if err.max() > cfg.max_reproj_px:
            continue
        rays = X - centres[views]
        rays /= np.linalg.norm(rays, axis=1, keepdims=True)
        if (rays @ rays.T).min() > min_cos:
            continue
        px = np.floor(xy).astype(np.int64)
        col = np.mean([images[v][min(r, images[v].shape[0] - 1), min(c, images[v].shape[1] - 1)]
                       for v, (c, r) in zip(views, px)], axis=0)
        points.append(X)
        colors.append(col)
    xyz = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    rgb = np.clip(np.asarray(colors, dtype=np.float32).reshape(-1, 3), 0.0, 1.0)
    n_tracks = len(xyz)
    if cfg.outlier_std > 0 and len(xyz) > cfg.outlier_neighbours + 1:
        keep = _inliers(xyz, cfg.outlier_neighbours, cfg.outlier_std)
        xyz, rgb = xyz[keep], rgb[keep]
    log.info("triangulated %d points (%d tracks before outlier removal) from %d matches over %d view pairs "
             "(%d views)", len(xyz), n_tracks, n_matches, len(pairs), len(cameras))
    return BasicPointCloud(xyz, rgb, np.zeros_like(xyz))
