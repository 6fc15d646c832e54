"""Camera conventions checked against real data: if a pose, axis flip, focal rescale or undistortion is wrong,
silhouettes and point colours stop agreeing across views.

Measured numbers are printed (run with ``-s``) and attached with ``record_property``.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scene.cameras import Camera, Distortion
from scene.colmap_loader import read_images, read_points3D
from scene.dataset_readers import read_scene
from utils.image_io import prepare_pixels, read_image

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def need(name: str) -> Path:
    path = DATA / name
    if not path.is_dir():
        pytest.skip(f"{path} absent (shared test data)")
    return path


def report(record_property, key: str, value) -> None:
    record_property(key, value)
    print(f"[measured] {key} = {value}")


# ----- visual hull (independent of the loaders: plain pinhole maths on the loaded cameras) -------------
# A view only carves what it sees: points outside its frame get no vote from it (several maryRose views cut
# the object at the border). Points seen by fewer than 90 % of the views are dropped, which removes the junk
# that no view can carve. Strict carving (out of frame = outside) measured 0.83 on maryRose: partial views and
# mask holes (the open mouth is background) cut off the ends of the tankard.
MIN_SEEN = 0.9


def _classify(cams: list[Camera], masks: list[np.ndarray], pts: np.ndarray,
              slack: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which points of pts [M, 3] each view sees and keeps: (rows [M'], in_mask [V, M'], in_frame [V, M']).

    Only points that could survive leave-one-out carving are returned (at most ``slack`` disagreeing views
    and enough views seeing them); the rest are dropped as soon as they fail, which keeps the test fast.
    """
    views = len(cams)
    max_unseen = views - int(np.ceil(MIN_SEEN * (views - slack)))
    rows = np.arange(len(pts))
    cur = np.ascontiguousarray(pts.T, dtype=np.float32)  # [3, M]: (3,3) @ (3,M) is far faster than (M,3) @ (3,3)
    bad = np.zeros(len(pts), np.int32)
    unseen = np.zeros(len(pts), np.int32)
    for cam, mask in zip(cams, masks):  # pass 1: prune
        inside, ok = _lookup(cam, mask, cur)
        bad += ok & ~inside
        unseen += ~ok
        alive = (bad <= slack) & (unseen <= max_unseen)
        rows, cur, bad, unseen = rows[alive], cur[:, alive], bad[alive], unseen[alive]
    in_mask = np.zeros((views, len(rows)), dtype=bool)
    in_frame = np.zeros_like(in_mask)
    for v, (cam, mask) in enumerate(zip(cams, masks)):  # pass 2: full table for the survivors
        in_mask[v], in_frame[v] = _lookup(cam, mask, cur)
    return rows, in_mask, in_frame


def _lookup(cam: Camera, mask: np.ndarray, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(inside mask, in front of the camera and in frame) for float32 points [3, M]; pixel = floor(uv)."""
    K = np.array([[cam.fx, 0, cam.cx], [0, cam.fy, cam.cy], [0, 0, 1]])
    P = (K @ cam.world_to_camera[:3]).astype(np.float32)  # [3, 4]
    h = P[:, :3] @ pts
    h += P[:, 3:]
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / h[2]
        u = h[0] * inv
        w = h[1] * inv
        ok = (h[2] > 1e-6) & (u >= 0) & (u < cam.width) & (w >= 0) & (w < cam.height)
        flat = np.where(ok, w.astype(np.int32) * cam.width + u.astype(np.int32), 0)
    return mask.ravel()[flat] & ok, ok


def _grid(lo: np.ndarray, hi: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Voxel centres [n^3, 3] (index order x, y, z) and the voxel size [3]."""
    size = (hi - lo) / n
    axes = [lo[i] + (np.arange(n) + 0.5) * size[i] for i in range(3)]
    g = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    return g, size


def _carve(in_mask: np.ndarray, in_frame: np.ndarray, exclude: int | None = None) -> np.ndarray:
    """[M] bool: inside every mask that sees the point, and seen by >= MIN_SEEN of the views (minus exclude)."""
    agree = (in_mask | ~in_frame).sum(axis=0)
    seen = in_frame.sum(axis=0)
    views = len(in_mask)
    if exclude is not None:
        agree = agree - (in_mask[exclude] | ~in_frame[exclude])
        seen = seen - in_frame[exclude]
        views -= 1
    return (agree == views) & (seen >= np.ceil(MIN_SEEN * views))


def _hull_box(cams, masks, lo, hi, n=40) -> tuple[np.ndarray, np.ndarray]:
    """Box around the coarse leave-one-out hulls, padded by 2 coarse voxels."""
    pts, size = _grid(lo, hi, n)
    rows, in_mask, in_frame = _classify(cams, masks, pts)
    keep = rows[np.any([_carve(in_mask, in_frame, v) for v in range(len(cams))], axis=0)]
    if not len(keep):
        return lo, hi
    return pts[keep].min(axis=0) - 2 * size, pts[keep].max(axis=0) + 2 * size


def _render_hull(occ: np.ndarray, lo: np.ndarray, size: np.ndarray, cam: Camera, samples: int = 256) -> np.ndarray:
    """March every pixel's ray through the occupancy grid occ [n, n, n]; [H, W] bool silhouette."""
    n = occ.shape[0]
    hi = lo + size * n
    jj, ii = np.mgrid[0:cam.height, 0:cam.width]
    d_cam = np.stack([(ii.ravel() + 0.5 - cam.cx) / cam.fx, (jj.ravel() + 0.5 - cam.cy) / cam.fy,
                      np.ones(ii.size)])  # [3, HW]
    d = cam.R.T @ d_cam  # world directions [3, HW], unit depth
    o = cam.camera_center[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        t_a, t_b = (lo[:, None] - o) / d, (hi[:, None] - o) / d
    t0 = np.nanmax(np.minimum(t_a, t_b), axis=0).clip(min=0)
    t1 = np.nanmin(np.maximum(t_a, t_b), axis=0)
    rays = np.flatnonzero(t1 > t0)
    # grid coordinates along each ray: g(t) = (o - lo) / size + t * d / size
    g0, gd = ((o - lo[:, None]) / size[:, None]), d[:, rays] / size[:, None]
    t0, dt = t0[rays], (t1[rays] - t0[rays]) / samples
    hit = np.zeros(rays.size, dtype=bool)
    flat_occ = occ.ravel()
    for s in range(samples):
        g = np.floor(g0 + gd * (t0 + dt * (s + 0.5))).astype(np.int64)
        ok = np.all((g >= 0) & (g < n), axis=0)
        hit |= flat_occ[np.where(ok, (g[0] * n + g[1]) * n + g[2], 0)] & ok
    out = np.zeros(d.shape[1], dtype=bool)
    out[rays] = hit
    return out.reshape(cam.height, cam.width)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def _occupancy(n: int, rows: np.ndarray, keep: np.ndarray) -> np.ndarray:
    occ = np.zeros(n ** 3, dtype=bool)
    occ[rows[keep]] = True
    return occ.reshape(n, n, n)


def _loo_hull_ious(cams, masks, held_out: list[int], lo, hi, n: int) -> list[float]:
    """For each held-out view: hull carved from every OTHER view, rendered into it, IoU with its mask."""
    lo, hi = _hull_box(cams, masks, lo, hi)
    pts, size = _grid(lo, hi, n)
    rows, in_mask, in_frame = _classify(cams, masks, pts)
    return [_iou(_render_hull(_occupancy(n, rows, _carve(in_mask, in_frame, h)), lo, size, cams[h]), masks[h])
            for h in held_out]


def _mary_rose(resolution: int):
    src = need("maryRose")
    info = read_scene(str(src), resolution=resolution)
    cams = info.train_cameras
    masks = []
    for cam in cams:
        raw = np.array(Image.open(src / "masks" / f"{cam.image_name}.png"))
        masks.append(cam.prepare_mask(raw) > 127)
    return info, cams, masks


@pytest.mark.slow
def test_maryrose_leave_one_out_hull(record_property):
    info, cams, masks = _mary_rose(resolution=2)  # 128 px
    assert (cams[0].width, cams[0].height) == (128, 128)
    held_out = list(range(0, len(cams), 8))
    ious = _loo_hull_ious(cams, masks, held_out, info.bounds[0], info.bounds[1], n=96)
    report(record_property, "maryRose_hull_iou_mean", round(float(np.mean(ious)), 4))
    report(record_property, "maryRose_hull_iou_min", round(float(np.min(ious)), 4))
    assert np.mean(ious) >= 0.85, ious
    assert np.min(ious) >= 0.75, ious


@pytest.mark.slow
def test_maryrose_hull_collapses_without_focal_rescale(record_property):
    """Negative control: using the file's focal (for 3456 px) on the small images must break the hull."""
    src = need("maryRose")
    info, cams, masks = _mary_rose(resolution=2)
    f_file = float(np.load(src / "poses_bounds.npy")[0, 14])
    wrong = [dataclasses.replace(c, fx=f_file, fy=f_file) for c in cams]
    held_out = list(range(0, len(cams), 8))
    ious = _loo_hull_ious(wrong, masks, held_out, info.bounds[0], info.bounds[1], n=64)
    report(record_property, "maryRose_hull_iou_no_focal_rescale", round(float(np.mean(ious)), 4))
    assert np.mean(ious) < 0.3, ious


@pytest.mark.slow
def test_lego_alpha_hull_into_test_views(record_property):
    src = need("lego")
    info = read_scene(str(src), eval=True)
    assert len(info.train_cameras) == 24 and len(info.test_cameras) == 8

    def alpha_mask(cam: Camera) -> np.ndarray:
        return cam.prepare_mask(read_image(cam.image_path)[..., 3]) > 127

    train = info.train_cameras
    tmasks = [alpha_mask(c) for c in train]
    lo, hi = _hull_box(train, tmasks, info.bounds[0], info.bounds[1])
    n = 96
    pts, size = _grid(lo, hi, n)
    rows, in_mask, in_frame = _classify(train, tmasks, pts, slack=0)
    occ = _occupancy(n, rows, _carve(in_mask, in_frame))
    ious = [_iou(_render_hull(occ, lo, size, c), alpha_mask(c)) for c in info.test_cameras]
    report(record_property, "lego_hull_iou_mean", round(float(np.mean(ious)), 4))
    report(record_property, "lego_hull_iou_min", round(float(np.min(ious)), 4))
    assert np.mean(ious) >= 0.85, ious


# ----- points3D against pixels ---------------------------------------------------------------------------
def _colour_stats(cam: Camera, xyz: np.ndarray, rgb: np.ndarray, rng: np.random.Generator):
    """(fraction in frame, mean |point − its pixel|, mean |point − random pixel|) in 0..255 units."""
    img = cam.prepare_image(cam.read_raw()) * 255.0  # [H, W, 3]
    uv, z = cam.project(xyz)
    ok = (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < cam.width) & (uv[:, 1] >= 0) & (uv[:, 1] < cam.height)
    u, v = np.floor(uv[ok]).astype(int).T
    rgb_ok = rgb[ok].astype(np.float64)
    hit = np.abs(img[v, u] - rgb_ok).mean()
    ru, rv = rng.integers(0, cam.width, ok.sum()), rng.integers(0, cam.height, ok.sum())
    rand = np.abs(img[rv, ru] - rgb_ok).mean()
    return float(ok.mean()), float(hit), float(rand)


def test_fern_points_land_on_their_colours(record_property):
    src = need("fern")
    info = read_scene(str(src))
    assert info.scene_type == "llff" and info.point_cloud is not None
    pts, _ = read_points3D(src / "sparse" / "0")
    rng = np.random.default_rng(0)
    stats = np.array([_colour_stats(c, pts.xyz, pts.rgb, rng) for c in info.train_cameras])
    frac, hit, rand = stats.mean(axis=0)
    report(record_property, "fern_points_in_frame", round(frac, 4))
    report(record_property, "fern_colour_err_points", round(hit, 2))
    report(record_property, "fern_colour_err_random", round(rand, 2))
    assert frac >= 0.90
    assert hit < 50 and rand > 70 and hit < 0.6 * rand


def _beer_observations(src: Path):
    images, _ = read_images(src / "sparse" / "0")
    pts, _ = read_points3D(src / "sparse" / "0")
    index = {int(i): k for k, i in enumerate(pts.ids)}
    by_name = {}
    for im in images.values():
        keep = im.point3D_ids >= 0
        rows = np.array([index[int(i)] for i in im.point3D_ids[keep]], dtype=np.int64)
        by_name[str(Path(im.name).with_suffix(""))] = (im.xys[keep], rows)
    return pts, by_name


def test_beer_points_land_on_their_colours(record_property):
    src = need("beer")
    info = read_scene(str(src))
    pts, obs = _beer_observations(src)
    rng = np.random.default_rng(0)
    stats = []
    for cam in info.train_cameras[::5]:  # 15 views: the pixel pipeline (undistortion) is the slow part
        _, rows = obs[cam.image_name]
        stats.append(_colour_stats(cam, pts.xyz[rows], pts.rgb[rows], rng))
    frac, hit, rand = np.array(stats).mean(axis=0)
    report(record_property, "beer_points_in_frame", round(float(frac), 4))
    report(record_property, "beer_colour_err_points", round(float(hit), 2))
    report(record_property, "beer_colour_err_random", round(float(rand), 2))
    assert frac >= 0.90
    assert hit < 0.6 * rand


def _colmap_distort(cam: Camera, uv: np.ndarray) -> np.ndarray:
    """COLMAP's forward distortion (radial k1, k2 + tangential p1, p2) written out, independent of OpenCV."""
    k1, k2, p1, p2 = (list(cam.distortion.coeffs) + [0.0] * 4)[:4] if cam.distortion else (0, 0, 0, 0)
    x, y = (uv[:, 0] - cam.cx) / cam.fx, (uv[:, 1] - cam.cy) / cam.fy
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2 * r2
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return np.stack([cam.fx * xd + cam.cx, cam.fy * yd + cam.cy], axis=1)


def test_beer_keypoints_reproject_with_simple_radial(record_property):
    """Poses, intrinsics and k1 as loaded reproduce COLMAP's keypoints (its mean reprojection error: 0.75 px)."""
    src = need("beer")
    info = read_scene(str(src))
    pts, obs = _beer_observations(src)
    errs, errs_pinhole, radius = [], [], []
    for cam in info.train_cameras:
        xys, rows = obs[cam.image_name]
        uv, z = cam.project(pts.xyz[rows])
        assert (z > 0).all()
        errs.append(np.linalg.norm(_colmap_distort(cam, uv) - xys, axis=1))
        errs_pinhole.append(np.linalg.norm(uv - xys, axis=1))
        radius.append(np.hypot((uv[:, 0] - cam.cx) / cam.fx, (uv[:, 1] - cam.cy) / cam.fy))
    err, err_pin, radius = (np.concatenate(a) for a in (errs, errs_pinhole, radius))
    outer = radius > 0.3  # where k1 matters (about 16 % of the keypoints)
    report(record_property, "beer_keypoint_reproj_px", round(float(err.mean()), 3))
    report(record_property, "beer_keypoint_reproj_px_outer", round(float(err[outer].mean()), 3))
    report(record_property, "beer_keypoint_reproj_px_outer_ignoring_k1", round(float(err_pin[outer].mean()), 3))
    assert err.mean() < 1.0 and err[outer].mean() < 1.2
    assert err_pin[outer].mean() > 2 * err[outer].mean()  # the distortion is real: ignoring it is worse


# ----- undistortion maps on synthetic images (OpenCV vs the formula above) -------------------------------
@pytest.mark.parametrize("dist,raw_scale", [(Distortion("SIMPLE_RADIAL", (0.15, 0.0, 0.0, 0.0)), 1),
                                            (Distortion("OPENCV", (0.1, -0.05, 0.01, -0.005)), 2)])
def test_undistortion_moves_blobs_to_pinhole_positions(dist, raw_scale):
    """Blobs drawn at distorted positions come out at the pinhole positions, for images and masks alike."""
    cam = Camera(0, "synthetic", 160, 120, 100.0, 104.0, 81.0, 59.0, np.eye(4), distortion=dist)
    raw_cam = cam.scaled(160 * raw_scale, 120 * raw_scale)
    gu, gv = np.meshgrid(np.linspace(20, 140, 5), np.linspace(18, 102, 4))
    targets = np.stack([gu.ravel(), gv.ravel()], axis=1)  # [16, 2] undistorted pixel positions at 160 px
    centres = _colmap_distort(cam, targets) * raw_scale  # where they are in the raw (distorted) image
    jj, ii = np.mgrid[0:raw_cam.height, 0:raw_cam.width] + 0.5
    img = np.zeros(ii.shape)
    disc = np.zeros(ii.shape, dtype=bool)
    for cu, cv in centres:
        d2 = (ii - cu) ** 2 + (jj - cv) ** 2
        img += np.exp(-d2 / (2 * (1.5 * raw_scale) ** 2))
        disc |= d2 < (3.5 * raw_scale) ** 2
    raw = (np.clip(img, 0, 1) * 65535).astype(np.uint16)[..., None].repeat(3, axis=2)
    out = prepare_pixels(raw, cam, is_mask=False)[..., 0]
    mask = prepare_pixels(disc, cam, is_mask=True)
    assert out.shape == (120, 160) and mask.shape == (120, 160) and mask.dtype == np.bool_
    plain = prepare_pixels(raw, dataclasses.replace(cam, distortion=None), is_mask=False)[..., 0]

    def centroid_errors(a: np.ndarray) -> np.ndarray:
        jj2, ii2 = np.mgrid[0:a.shape[0], 0:a.shape[1]] + 0.5
        errs = []
        for tu, tv in targets:
            win = ((ii2 - tu) ** 2 + (jj2 - tv) ** 2 < 7 ** 2) * a
            s = win.sum()
            errs.append(np.hypot((win * ii2).sum() / s - tu, (win * jj2).sum() / s - tv) if s > 0 else np.inf)
        return np.array(errs)

    plain_mask = prepare_pixels(disc, dataclasses.replace(cam, distortion=None), is_mask=True)
    assert centroid_errors(out).max() < 0.15
    assert centroid_errors(mask.astype(float)).max() < 0.8  # nearest sampling: up to ~half a pixel
    # negative control: without undistortion the blobs are off by pixels
    assert centroid_errors(plain).max() > 2.0 and centroid_errors(plain_mask.astype(float)).max() > 2.0
