"""scene.triangulate: points from known poses, checked against geometry built independently of it.

The synthetic scene is a noise-textured cube ray-cast in numpy (slab intersection, bilinear texture), so
every triangulated point must lie on the cube's surface; a wrong convention (pixel centres, axes, the
fundamental matrix) moves points off it or leaves none.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from scene.cameras import Camera
from scene.triangulate import TriangulationConfig, fundamental_matrix, sampson_distance, triangulate_points

SIZE = 128
F = 150.0
HALF = 0.5   # cube [-0.5, 0.5]^3


def _look_at(centre: np.ndarray) -> np.ndarray:
    """[4, 4] world-to-camera (OpenCV axes) of a camera at ``centre`` looking at the origin."""
    z = -centre / np.linalg.norm(centre)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])
    w2c = np.eye(4)
    w2c[:3, :3] = R
    w2c[:3, 3] = -R @ centre
    return w2c


def _texture(rng: np.random.Generator, n: int = 48) -> np.ndarray:
    """[6, n, n] smooth-ish noise per face."""
    t = rng.random((6, n, n))
    return (t + np.roll(t, 1, 1) + np.roll(t, 1, 2)) / 3.0


def _render(cam: Camera, tex: np.ndarray) -> np.ndarray:
    """Ray-cast the textured cube on a white background → [H, W, 3] uint8."""
    ys, xs = np.mgrid[0:cam.height, 0:cam.width] + 0.5
    d_cam = np.stack([(xs - cam.cx) / cam.fx, (ys - cam.cy) / cam.fy, np.ones_like(xs)], -1).reshape(-1, 3)
    d = d_cam @ cam.R            # world directions (R^T d)
    o = cam.camera_center
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (-HALF - o) / d
        t2 = (HALF - o) / d
    tmin = np.nanmax(np.minimum(t1, t2), axis=1)
    tmax = np.nanmin(np.maximum(t1, t2), axis=1)
    hit = (tmax >= tmin) & (tmax > 0)
    p = o + d * tmin[:, None]
    axis = np.argmax(np.abs(p) / HALF, axis=1)                  # the face the ray enters through
    face = axis * 2 + (np.take_along_axis(p, axis[:, None], 1)[:, 0] > 0)
    uv_axes = np.array([[1, 2], [0, 2], [0, 1]])[axis]
    u = (np.take_along_axis(p, uv_axes[:, :1], 1)[:, 0] / (2 * HALF) + 0.5) * (tex.shape[1] - 1)
    v = (np.take_along_axis(p, uv_axes[:, 1:], 1)[:, 0] / (2 * HALF) + 0.5) * (tex.shape[2] - 1)
    u = np.clip(u, 0, tex.shape[1] - 1.001)
    v = np.clip(v, 0, tex.shape[2] - 1.001)
    i, j = np.floor(u).astype(int), np.floor(v).astype(int)
    a, b = u - i, v - j
    val = (tex[face, i, j] * (1 - a) * (1 - b) + tex[face, i + 1, j] * a * (1 - b)
           + tex[face, i, j + 1] * (1 - a) * b + tex[face, i + 1, j + 1] * a * b)
    img = np.where(hit, 0.1 + 0.8 * val, 1.0)
    return np.repeat((img.reshape(cam.height, cam.width, 1) * 255 + 0.5).astype(np.uint8), 3, axis=2)


def _scene(n_views: int = 16) -> list[Camera]:
    rng = np.random.default_rng(0)
    tex = _texture(rng)
    cams = []
    for k in range(n_views):
        az = 2 * np.pi * k / n_views
        el = 0.35 if k % 2 else -0.25
        centre = 3.5 * np.array([np.cos(az) * np.cos(el), np.sin(az) * np.cos(el), np.sin(el)])
        cam = Camera(uid=k, image_name=f"v{k:02d}", width=SIZE, height=SIZE, fx=F, fy=F, cx=SIZE / 2,
                     cy=SIZE / 2, world_to_camera=_look_at(centre))
        img = _render(cam, tex)
        cam.loader = (lambda im=img: im)
        cams.append(cam)
    return cams


def _distance_to_cube_surface(p: np.ndarray) -> np.ndarray:  # [P, 3] -> [P]
    q = np.abs(p) - HALF
    outside = np.linalg.norm(np.maximum(q, 0.0), axis=1)
    inside = np.minimum(q.max(axis=1), 0.0)
    return np.abs(outside + inside)


def testsampson_distance_distance_zero_for_consistent_matches_and_grows_with_offset():
    cams = _scene(4)
    rng = np.random.default_rng(1)
    X = rng.uniform(-0.5, 0.5, (50, 3))
    xa, _ = cams[0].project(X)
    xb, _ = cams[1].project(X)
    Fm = fundamental_matrix(cams[0], cams[1])
    assert sampson_distance(Fm, xa, xb).max() < 1e-6
    # moving xb by 3 px perpendicular to its epipolar line gives a Sampson distance near 3 px
    line = np.concatenate([xa, np.ones((50, 1))], axis=1) @ Fm.T   # l_b = F x_a
    n = line[:, :2] / np.linalg.norm(line[:, :2], axis=1, keepdims=True)
    d = sampson_distance(Fm, xa, xb + 3.0 * n)
    assert np.all((d > 1.0) & (d < 3.5))


@pytest.mark.slow
def test_triangulated_points_lie_on_the_cube():
    cams = _scene()
    pcd = triangulate_points(cams, cfg=TriangulationConfig(neighbours=4))
    assert len(pcd.points) > 200
    dist = _distance_to_cube_surface(pcd.points.astype(np.float64))
    # 1 px at the cube's distance is ~0.02 units; points sit on the surface, outliers are rare
    assert np.median(dist) < 0.01
    assert np.mean(dist < 0.05) > 0.97
    # colours come from the texture (0.1..0.9 grey), never the white background
    assert pcd.colors.shape == pcd.points.shape
    assert np.median(pcd.colors) < 0.9


@pytest.mark.slow
def test_wrong_poses_give_few_points():
    """The epipolar and reprojection checks must reject matches when the poses do not fit the images:
    every camera turned by 5 degrees about a random axis (~13 px at the image centre)."""
    good = len(triangulate_points(_scene(), cfg=TriangulationConfig(neighbours=4)).points)
    cams = _scene()
    rng = np.random.default_rng(2)
    for c in cams:
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        a = np.radians(5.0)
        K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
        rot = np.eye(4)
        rot[:3, :3] = np.eye(3) + np.sin(a) * K + (1 - np.cos(a)) * K @ K
        c.world_to_camera = rot @ c.world_to_camera
    bad = len(triangulate_points(cams, cfg=TriangulationConfig(neighbours=4)).points)
    assert bad < 0.1 * good


DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "fern"


@pytest.mark.slow
@pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data/fern not present")
def test_fern_points_agree_with_colmap():
    """On a real capture the triangulated points land where COLMAP's own points are."""
    from pykdtree.kdtree import KDTree

    from scene.dataset_readers import read_scene

    info = read_scene(str(DATA), "images_8", -1, False, False)
    cams = info.train_cameras[::3]
    pcd = triangulate_points(cams, cfg=TriangulationConfig(neighbours=3, upscale=1))
    ref = info.point_cloud.points.astype(np.float64)
    assert len(pcd.points) > 500
    d, _ = KDTree(ref).query(pcd.points.astype(np.float64), k=1)
    spacing, _ = KDTree(ref).query(ref, k=2)
    assert np.median(d) < 3 * np.median(spacing[:, 1])


def _scene_info(cams: list[Camera]):
    from scene.types import SceneInfo

    return SceneInfo("llff", "generated", cams, [], None, {"translate": np.zeros(3), "radius": 4.0},
                     np.array([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))


@pytest.mark.slow
def test_scene_triangulate_init_and_fallback(tmp_path: Path, caplog):
    """Scene(random_init="triangulate") starts from the triangulated points (not counted as random); a
    textureless scene falls back to random points coloured from the images, with a warning."""
    from arguments import ModelParams
    from scene.gaussian_model import GaussianModel
    from scene.scene import Scene
    from utils.ply import read_point_cloud_ply

    cams = _scene(24)
    scene = Scene(ModelParams(source_path="generated", model_path=str(tmp_path / "a")), GaussianModel(0, "cpu"),
                  random_init_points=300, scene_info=_scene_info(cams), random_init="triangulate")
    assert not scene.random_init
    pts = read_point_cloud_ply(tmp_path / "a" / "input.ply").points
    assert len(pts) > 200 and np.median(_distance_to_cube_surface(pts.astype(np.float64))) < 0.01

    for c in cams:
        c.loader = (lambda: np.full((SIZE, SIZE, 3), 128, np.uint8))
    with caplog.at_level("WARNING"):
        scene = Scene(ModelParams(source_path="generated", model_path=str(tmp_path / "b")),
                      GaussianModel(0, "cpu"), random_init_points=300, scene_info=_scene_info(cams),
                      random_init="triangulate")
    assert scene.random_init and len(read_point_cloud_ply(tmp_path / "b" / "input.ply").points) == 300
    assert "random points coloured from the images instead" in caplog.text


def test_sift_keypoints_use_colmap_pixel_centres():
    """A dark Gaussian blob centred on pixel (row 30, column 20) is at (20.5, 30.5) in COLMAP's convention,
    the one Camera.project uses; a half-pixel slip here would bias every triangulated point. (Default
    config; with upscale=1 OpenCV's own octave doubling puts this keypoint 0.23 px off.)"""
    from scene.triangulate import sift_features

    ys, xs = np.mgrid[0:64, 0:64]
    img = 1.0 - 0.8 * np.exp(-((xs - 20) ** 2 + (ys - 30) ** 2) / (2 * 2.5 ** 2))
    xy, _ = sift_features(np.repeat(img[..., None], 3, axis=2).astype(np.float32),
                          TriangulationConfig())
    d = np.linalg.norm(xy - [20.5, 30.5], axis=1)
    assert len(xy) and d.min() < 0.15, xy


MARY = Path(__file__).resolve().parents[2] / "shared" / "data" / "maryRose"


@pytest.mark.slow
@pytest.mark.skipif(not MARY.is_dir(), reason="../shared/data/maryRose not present")
def test_scene_consistency_benchmark_runs(tmp_path: Path):
    """benchmarks/scene_consistency.py on maryRose's first views: object matches agree with the poses; a
    bad mask folder is one error line and exit status 2."""
    import json
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "c.json"
    res = subprocess.run([sys.executable, "benchmarks/scene_consistency.py", "--source", str(MARY), "--masks",
                          str(MARY / "masks"), "--views", "4", "--json", str(out)],
                         cwd=repo, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    data = json.loads(out.read_text())
    assert len(data["pairs"]) == 3 and data["object_matches"] > 300 and data["object_agree_rate"] > 0.9
    res = subprocess.run([sys.executable, "benchmarks/scene_consistency.py", "--source", str(MARY), "--masks",
                          str(tmp_path / "nope")], cwd=repo, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "nope" in res.stderr, res.stderr
