"""Scene readers: every format on real data, text vs binary COLMAP, eval split, resolution, lazy loading and
every user error. Geometry (do poses, focals and undistortion agree with the pixels?) is in
test_conventions.py.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scene.cameras import Camera, ImageCache
from scene.colmap_loader import (ColmapCamera, ColmapImage, ColmapPoints, qvec_to_rotmat, read_cameras_binary,
                                 read_cameras_text, read_images_binary, read_images_text, read_points3D_binary,
                                 read_points3D_text, rotmat_to_qvec, write_cameras_binary, write_cameras_text,
                                 write_images_binary, write_images_text, write_points3D_binary, write_points3D_text)
from scene.dataset_readers import read_scene, target_resolution
from utils.errors import UserError
from utils.image_io import prepare_pixels, read_image, read_image_size

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def need(name: str) -> Path:
    path = DATA / name
    if not path.is_dir():
        pytest.skip(f"{path} absent (shared test data)")
    return path


def stems(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".png"))


def inria_norm(centres: np.ndarray) -> tuple[np.ndarray, float]:
    """getNerfppNorm written out from its definition, on camera centres [N, 3] taken from the raw files."""
    c = centres.mean(axis=0)
    return -c, 1.1 * float(np.linalg.norm(centres - c, axis=1).max())


# ----- real data sets ----------------------------------------------------------------------------------
def test_beer_colmap_binary():
    src = need("beer")
    info = read_scene(str(src))
    cams = info.train_cameras
    assert info.scene_type == "colmap" and len(cams) == 71 and info.test_cameras == []
    assert [c.image_name for c in cams] == stems(src / "images")
    assert all((c.width, c.height) == (720, 1280) for c in cams)
    assert all(c.distortion is not None and c.distortion.model == "SIMPLE_RADIAL" for c in cams)
    fx = np.array([c.fx for c in cams])
    k1 = np.array([c.distortion.coeffs[0] for c in cams])
    assert np.all(fx == np.array([c.fy for c in cams]))
    # README: f 1101.6–1155.3, cx = 360, cy = 640, k1 −0.019 … +0.104
    assert 1101.5 < fx.min() < 1101.7 and 1155.2 < fx.max() < 1155.4
    assert all((c.cx, c.cy) == (360.0, 640.0) for c in cams)
    assert -0.020 < k1.min() < -0.018 and 0.103 < k1.max() < 0.105
    assert info.point_cloud is not None and info.point_cloud.points.shape == (4414, 3)
    assert info.point_cloud.colors.min() >= 0 and info.point_cloud.colors.max() <= 1
    pts = read_points3D_binary(src / "sparse/0/points3D.bin")
    assert int(pts.track_offsets[-1]) == 30839 and abs(pts.errors.mean() - 0.75) < 0.01
    np.testing.assert_allclose(info.bounds, [pts.xyz.min(0), pts.xyz.max(0)], rtol=1e-6)
    # poses_bounds.npy (the source's LLFF export) has the same camera centres (README: 5e-15)
    pb = np.load(src / "poses_bounds.npy")
    centres = np.stack([c.camera_center for c in cams])
    np.testing.assert_allclose(centres, pb[:, :15].reshape(-1, 3, 5)[:, :, 3], atol=1e-9)
    img = cams[0].load_image()
    assert img.shape == (3, 1280, 720) and 0 <= float(img.min()) and float(img.max()) <= 1


def test_fern_llff_with_colmap_points():
    src = need("fern")
    info = read_scene(str(src))
    cams = info.train_cameras
    assert info.scene_type == "llff" and len(cams) == 20
    assert [c.image_name for c in cams] == stems(src / "images_8")
    assert all((c.width, c.height) == (504, 378) for c in cams)
    assert cams[0].fx == pytest.approx(3260.526 * 504 / 4032, rel=1e-6)
    assert cams[0].fy == pytest.approx(3260.526 * 378 / 3024, rel=1e-6)
    assert (cams[0].cx, cams[0].cy) == (252.0, 189.0) and cams[0].distortion is None
    assert info.point_cloud is not None and len(info.point_cloud.points) == 10091
    pb = np.load(src / "poses_bounds.npy")
    P = pb[:, :15].reshape(-1, 3, 5)
    np.testing.assert_allclose(np.stack([c.camera_center for c in cams]), P[:, :, 3], atol=1e-9)
    # optical axis = -"back" column; LLFF "right" column = camera x axis
    for c, p in zip(cams, P):
        np.testing.assert_allclose(c.R[2], -p[:, 2], atol=1e-9)
        np.testing.assert_allclose(c.R[0], p[:, 1], atol=1e-9)
    translate, radius = inria_norm(P[:, :, 3])
    np.testing.assert_allclose(info.nerf_normalization["translate"], translate, atol=1e-12)
    assert info.nerf_normalization["radius"] == pytest.approx(radius, rel=1e-12)
    cams_bin = read_cameras_binary(src / "sparse/0/cameras.bin")
    assert list(cams_bin) == [1] and cams_bin[1].model == "SIMPLE_RADIAL"
    assert (cams_bin[1].width, cams_bin[1].height) == (4032, 3024)
    np.testing.assert_allclose(cams_bin[1].params, [3260.526, 2016, 1512, 0.01975], atol=1e-3)
    assert cams[3].load_image().shape == (3, 378, 504)


def test_lego_blender():
    src = need("lego")
    info = read_scene(str(src))
    assert info.scene_type == "blender" and info.point_cloud is None
    assert len(info.train_cameras) == 32 and info.test_cameras == []  # Inria folds test into train without --eval
    ev = read_scene(str(src), eval=True)
    assert len(ev.train_cameras) == 24 and len(ev.test_cameras) == 8
    assert all(c.image_name.startswith("train/") for c in ev.train_cameras)
    assert [c.image_name for c in ev.test_cameras] == [f"test/r_{i}" for i in range(0, 200, 25)]
    assert len({c.uid for c in info.train_cameras}) == 32
    np.testing.assert_array_equal(ev.bounds, [[-1.3] * 3, [1.3] * 3])
    frames = json.loads((src / "transforms_train.json").read_text())["frames"]
    c2w = np.array([f["transform_matrix"] for f in frames])
    for cam, m in zip(ev.train_cameras, c2w):
        assert cam.fx == pytest.approx(277.777, abs=1e-2) and cam.fy == cam.fx and (cam.cx, cam.cy) == (100, 100)
        np.testing.assert_allclose(cam.camera_center, m[:3, 3], atol=1e-5)  # json rotations are float32
        np.testing.assert_allclose(cam.R[2], -m[:3, 2], atol=1e-5)  # looks along -z of the OpenGL camera
        uv, z = cam.project(np.zeros((1, 3)))  # the object sits at the origin: in front, inside the frame
        assert z[0] > 0 and np.all(np.abs(uv[0] - 100) < 60)
    translate, radius = inria_norm(c2w[:, :3, 3])
    np.testing.assert_allclose(ev.nerf_normalization["translate"], translate, atol=1e-5)
    assert ev.nerf_normalization["radius"] == pytest.approx(radius, rel=1e-5)
    # RGBA composited on the camera's background
    raw = read_image(ev.train_cameras[0].image_path)
    assert raw.shape == (200, 200, 4) and raw[0, 0, 3] == 0
    assert float(ev.train_cameras[0].load_image()[:, 0, 0].min()) == 0.0
    white = read_scene(str(src), eval=True, white_background=True)
    assert float(white.train_cameras[0].load_image()[:, 0, 0].min()) == 1.0
    obj = raw[..., 3] == 255
    np.testing.assert_allclose(white.train_cameras[0].load_image().permute(1, 2, 0).numpy()[obj],
                               raw[obj][:, :3] / 255.0, atol=1e-6)


def test_maryrose_llff_and_masks():
    src = need("maryRose")
    info = read_scene(str(src))
    cams = info.train_cameras
    assert info.scene_type == "llff" and len(cams) == 69 and info.point_cloud is None
    assert all((c.width, c.height) == (256, 256) for c in cams)
    f_file = np.load(src / "poses_bounds.npy")[:, 14]
    np.testing.assert_allclose([c.fx for c in cams], f_file * 256 / 3456, rtol=1e-9)
    assert cams[0].fx == pytest.approx(781.28, abs=0.01) and (cams[0].cx, cams[0].cy) == (128, 128)
    masks = stems(src / "masks")
    assert masks == [c.image_name for c in cams]
    m = np.array(Image.open(src / "masks" / f"{cams[0].image_name}.png"))
    small = cams[0].scaled(128, 128).prepare_mask(m)
    assert small.shape == (128, 128) and small.dtype == np.uint8 and set(np.unique(small)) <= {0, 255}
    near_far = np.array(list(info.extra["near_far"].values()))
    assert near_far.min() == pytest.approx(3.02, abs=0.01) and near_far.max() == pytest.approx(4.47, abs=0.01)
    # the frusta box contains every camera's look-at point at mid depth
    for c in cams:
        mid = c.camera_center + c.R[2] * near_far.mean()
        assert np.all(mid >= info.bounds[0]) and np.all(mid <= info.bounds[1])


# ----- split, resolution, normalisation ----------------------------------------------------------------
def test_eval_split_every_eighth():
    src = need("maryRose")
    full = read_scene(str(src))
    ev = read_scene(str(src), eval=True)
    names = [c.image_name for c in full.train_cameras]
    assert [c.image_name for c in ev.test_cameras] == names[::8]
    assert [c.image_name for c in ev.train_cameras] == [n for i, n in enumerate(names) if i % 8]
    assert len(ev.train_cameras) == 60 and len(ev.test_cameras) == 9
    assert {c.uid for c in ev.train_cameras}.isdisjoint({c.uid for c in ev.test_cameras})
    t, r = inria_norm(np.stack([c.camera_center for c in ev.train_cameras]))  # train cameras only, like Inria
    np.testing.assert_allclose(ev.nerf_normalization["translate"], t)
    assert ev.nerf_normalization["radius"] == pytest.approx(r)
    assert ev.nerf_normalization["radius"] != pytest.approx(full.nerf_normalization["radius"])
    beer = read_scene(str(need("beer")), eval=True, llffhold=10)
    assert len(beer.test_cameras) == 8 and len(beer.train_cameras) == 63


@pytest.mark.parametrize("size,res,expected", [
    ((1920, 1080), -1, (1600, 900)), ((1080, 1920), -1, (900, 1600)), ((800, 600), -1, (800, 600)),
    ((1600, 1200), -1, (1600, 1200)), ((1001, 751), 2, (500, 376)), ((720, 1280), 4, (180, 320)),
    ((720, 1280), 1, (720, 1280)), ((720, 1280), 300, (300, 533)), ((200, 200), 100, (100, 100)),
    ((5000, 10), -1, (1600, 3)),
])
def test_target_resolution(size, res, expected):
    assert target_resolution(*size, res) == expected


def test_resolution_option_scales_intrinsics_and_pixels():
    src = need("beer")
    full = read_scene(str(src)).train_cameras[5]
    half = read_scene(str(src), resolution=2).train_cameras[5]
    assert (half.width, half.height) == (360, 640)
    assert half.fx == pytest.approx(full.fx / 2) and half.cy == pytest.approx(320)
    assert half.distortion == full.distortion
    assert half.load_image().shape == (3, 640, 360)
    w300 = read_scene(str(src), resolution=300).train_cameras[0]
    assert (w300.width, w300.height) == (300, 533)
    assert w300.fy == pytest.approx(read_scene(str(src)).train_cameras[0].fy * 533 / 1280)
    lego = read_scene(str(need("lego")), resolution=4).train_cameras[0]
    assert (lego.width, lego.height, lego.fx) == (50, 50, pytest.approx(277.7777 / 4, rel=1e-4))
    assert lego.load_image().shape == (3, 50, 50)


# ----- synthetic COLMAP scenes -------------------------------------------------------------------------
def _look_at(centre: np.ndarray, target: np.ndarray = np.zeros(3)) -> np.ndarray:
    """World-to-camera [4, 4] (OpenCV axes) for a camera at centre looking at target, world up = -y."""
    fwd = (target - centre) / np.linalg.norm(target - centre)
    right = np.cross(fwd, [0.0, -1.0, 0.0])
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    R = np.stack([right, down, fwd])
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = R, -R @ centre
    return m


def _tiny_colmap(root: Path, n: int = 3, size: tuple[int, int] = (64, 48), model: str = "PINHOLE",
                 params=None, binary: bool = False, write_images: bool = True,
                 points: bool = True) -> dict[int, ColmapImage]:
    """A small COLMAP scene (cameras on a circle around the origin) written with the library writers."""
    sparse = root / "sparse" / "0"
    sparse.mkdir(parents=True)
    (root / "images").mkdir()
    w, h = size
    params = np.array(params if params is not None else [50.0, 52.0, w / 2, h / 2], dtype=np.float64)
    cams = {1: ColmapCamera(1, model, w, h, params)}
    images = {}
    for i in range(n):
        a = 2 * np.pi * i / n
        m = _look_at(np.array([4 * np.cos(a), -1.0, 4 * np.sin(a)]))
        images[i + 1] = ColmapImage(i + 1, rotmat_to_qvec(m[:3, :3]), m[:3, 3], 1, f"view_{i:02d}.png")
        if write_images:
            Image.fromarray(np.full((h, w, 3), 40 * i, np.uint8)).save(root / "images" / f"view_{i:02d}.png")
    write = (write_cameras_binary, write_images_binary) if binary else (write_cameras_text, write_images_text)
    write[0](sparse / ("cameras.bin" if binary else "cameras.txt"), cams)
    write[1](sparse / ("images.bin" if binary else "images.txt"), images)
    if points:
        xyz = np.array([[0.0, 0, 0], [0.5, -0.2, 0.1], [-0.3, 0.4, 0.2]])
        pts = ColmapPoints(np.arange(1, 4), xyz, np.full((3, 3), 200, np.uint8), np.full(3, 0.5),
                           np.zeros(4, np.int64), np.zeros(0, np.int32), np.zeros(0, np.int32))
        (write_points3D_binary if binary else write_points3D_text)(
            sparse / ("points3D.bin" if binary else "points3D.txt"), pts)
    return images


@pytest.mark.parametrize("binary", [False, True])
def test_tiny_colmap_scene_poses(tmp_path, binary):
    """A scene built from known look-at poses reads back with exactly those poses and intrinsics."""
    images = _tiny_colmap(tmp_path, n=4, binary=binary)
    info = read_scene(str(tmp_path))
    assert info.scene_type == "colmap" and len(info.train_cameras) == 4
    assert info.point_cloud is not None and info.point_cloud.points.shape == (3, 3)
    np.testing.assert_allclose(info.bounds, [[-0.3, -0.2, 0], [0.5, 0.4, 0.2]], atol=1e-7)
    for cam, im in zip(info.train_cameras, sorted(images.values(), key=lambda x: x.name)):
        np.testing.assert_allclose(cam.world_to_camera, im.world_to_camera(), atol=1e-12)
        uv, z = cam.project(np.zeros((1, 3)))
        np.testing.assert_allclose(uv[0], [32, 24], atol=1e-9)  # every camera looks at the origin
        assert z[0] == pytest.approx(np.sqrt(17))
        assert (cam.fx, cam.fy, cam.cx, cam.cy) == (50.0, 52.0, 32.0, 24.0)


def test_text_and_binary_models_agree(tmp_path):
    """beer's COLMAP-written binary model == our text export read back == our binary export (byte for byte)."""
    src = need("beer")
    sparse = src / "sparse" / "0"
    cams_b = read_cameras_binary(sparse / "cameras.bin")
    imgs_b = read_images_binary(sparse / "images.bin")
    pts_b = read_points3D_binary(sparse / "points3D.bin")
    write_cameras_text(tmp_path / "cameras.txt", cams_b)
    write_images_text(tmp_path / "images.txt", imgs_b)
    write_points3D_text(tmp_path / "points3D.txt", pts_b)
    cams_t = read_cameras_text(tmp_path / "cameras.txt")
    imgs_t = read_images_text(tmp_path / "images.txt")
    pts_t = read_points3D_text(tmp_path / "points3D.txt")
    assert cams_t.keys() == cams_b.keys() and imgs_t.keys() == imgs_b.keys()
    for k in cams_b:
        a, b = cams_b[k], cams_t[k]
        assert (a.model, a.width, a.height) == (b.model, b.width, b.height)
        np.testing.assert_array_equal(a.params, b.params)
    for k in imgs_b:
        a, b = imgs_b[k], imgs_t[k]
        assert (a.name, a.camera_id) == (b.name, b.camera_id)
        for f in ("qvec", "tvec", "xys", "point3D_ids"):
            np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    for f in ("ids", "xyz", "rgb", "errors", "track_offsets", "track_image_ids", "track_point2D_idxs"):
        np.testing.assert_array_equal(getattr(pts_b, f), getattr(pts_t, f))
    # our binary writer reproduces COLMAP's files exactly
    write_cameras_binary(tmp_path / "cameras.bin", cams_t)
    write_images_binary(tmp_path / "images.bin", imgs_t)
    write_points3D_binary(tmp_path / "points3D.bin", pts_t)
    for name in ("cameras.bin", "images.bin", "points3D.bin"):
        assert (tmp_path / name).read_bytes() == (sparse / name).read_bytes(), name
    # and a whole scene read from the text model equals the binary one
    scene_t = tmp_path / "scene"
    (scene_t / "sparse" / "0").mkdir(parents=True)
    for name in ("cameras.txt", "images.txt", "points3D.txt"):
        shutil.copy(tmp_path / name, scene_t / "sparse" / "0" / name)
    (scene_t / "images").symlink_to(src / "images")
    a, b = read_scene(str(src)), read_scene(str(scene_t))
    for ca, cb in zip(a.train_cameras, b.train_cameras):
        assert (ca.image_name, ca.width, ca.height, ca.fx, ca.fy, ca.cx, ca.cy) == \
               (cb.image_name, cb.width, cb.height, cb.fx, cb.fy, cb.cx, cb.cy)
        np.testing.assert_array_equal(ca.world_to_camera, cb.world_to_camera)
        assert ca.distortion == cb.distortion
    np.testing.assert_array_equal(a.point_cloud.points, b.point_cloud.points)


def test_handwritten_text_model(tmp_path):
    """Text exactly as COLMAP writes it: comment header, an image without keypoints, a name with a space."""
    (tmp_path / "cameras.txt").write_text(
        "# Camera list with one line of data per camera:\n#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n"
        "# Number of cameras: 2\n1 SIMPLE_PINHOLE 3072 2304 2559.81 1536 1152\n"
        "2 OPENCV 640 480 500 510 320.5 239.5 0.01 -0.02 0.001 0.002\n")
    (tmp_path / "images.txt").write_text(
        "# Image list with two lines of data per image:\n"
        "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME\n#   POINTS2D[] as (X, Y, POINT3D_ID)\n"
        "# Number of images: 2, mean observations per image: 1\n"
        "1 0.851773 0.0165051 0.503764 -0.142941 -0.737434 1.02973 3.74354 1 P1180141 copy.JPG\n"
        "2362.39 248.498 -1 1784.7 268.254 7\n"
        "2 1 0 0 0 0.5 0 0 2 sub/P1180142.JPG\n\n")
    (tmp_path / "points3D.txt").write_text(
        "# 3D point list with one line of data per point:\n"
        "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)\n"
        "# Number of points: 2, mean track length: 1.5\n"
        "7 1.5 -0.25 3 255 128 0 0.5 1 1 2 0\n9 0 0 0 1 2 3 0.1\n")
    cams = read_cameras_text(tmp_path / "cameras.txt")
    assert cams[1].model == "SIMPLE_PINHOLE" and (cams[1].width, cams[1].height) == (3072, 2304)
    np.testing.assert_array_equal(cams[2].params, [500, 510, 320.5, 239.5, 0.01, -0.02, 0.001, 0.002])
    imgs = read_images_text(tmp_path / "images.txt")
    assert imgs[1].name == "P1180141 copy.JPG" and imgs[2].name == "sub/P1180142.JPG"
    np.testing.assert_array_equal(imgs[1].xys, [[2362.39, 248.498], [1784.7, 268.254]])
    np.testing.assert_array_equal(imgs[1].point3D_ids, [-1, 7])
    assert imgs[2].xys.shape == (0, 2) and imgs[2].camera_id == 2
    np.testing.assert_allclose(imgs[2].rotation(), np.eye(3))
    R = imgs[1].rotation()
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(qvec_to_rotmat(rotmat_to_qvec(R)), R, atol=1e-12)
    pts = read_points3D_text(tmp_path / "points3D.txt")
    np.testing.assert_array_equal(pts.ids, [7, 9])
    np.testing.assert_array_equal(pts.rgb, [[255, 128, 0], [1, 2, 3]])
    np.testing.assert_array_equal(pts.track_offsets, [0, 2, 2])
    np.testing.assert_array_equal(pts.track_image_ids, [1, 2])
    # and its binary round trip
    write_cameras_binary(tmp_path / "c.bin", cams)
    write_images_binary(tmp_path / "i.bin", imgs)
    write_points3D_binary(tmp_path / "p.bin", pts)
    assert read_images_binary(tmp_path / "i.bin")[1].name == "P1180141 copy.JPG"
    np.testing.assert_array_equal(read_cameras_binary(tmp_path / "c.bin")[2].params, cams[2].params)
    np.testing.assert_array_equal(read_points3D_binary(tmp_path / "p.bin").xyz, pts.xyz)


@pytest.mark.parametrize("model,params,coeffs", [
    ("SIMPLE_PINHOLE", [50, 32, 24], None),
    ("SIMPLE_RADIAL", [50, 32, 24, 0.05], (0.05, 0.0, 0.0, 0.0)),
    ("RADIAL", [50, 32, 24, 0.05, -0.01], (0.05, -0.01, 0.0, 0.0)),
    ("OPENCV", [50, 52, 32, 24, 0.05, -0.01, 0.001, 0.002], (0.05, -0.01, 0.001, 0.002)),
])
def test_supported_camera_models(tmp_path, model, params, coeffs):
    _tiny_colmap(tmp_path, model=model, params=params, binary=True)
    cam = read_scene(str(tmp_path)).train_cameras[0]
    assert cam.fx == params[0] and cam.fy == (params[1] if model in ("PINHOLE", "OPENCV") else params[0])
    assert (cam.distortion.coeffs if cam.distortion else None) == coeffs
    assert cam.load_image().shape == (3, 48, 64)


def test_colmap_model_with_downscaled_image_folder(tmp_path):
    """Inria's `-i images_2`: the model describes full-size images, the folder holds smaller ones."""
    _tiny_colmap(tmp_path, n=3, model="SIMPLE_RADIAL", params=[50, 32, 24, 0.05])
    (tmp_path / "images_2").mkdir()
    for p in (tmp_path / "images").iterdir():
        Image.open(p).resize((32, 24)).save(tmp_path / "images_2" / p.name)
    cam = read_scene(str(tmp_path), images="images_2").train_cameras[0]
    assert (cam.width, cam.height, cam.fx, cam.fy, cam.cx, cam.cy) == (32, 24, 25.0, 25.0, 16.0, 12.0)
    assert cam.distortion.coeffs[0] == 0.05  # distortion is resolution independent
    Image.open(tmp_path / "images" / "view_00.png").resize((32, 32)).save(tmp_path / "images_2" / "view_00.png")
    with pytest.warns(UserWarning, match="1 image.*another aspect ratio"):
        cam = read_scene(str(tmp_path), images="images_2").train_cameras[0]
    assert (cam.fx, cam.fy) == (25.0, pytest.approx(50 * 32 / 48))


# ----- lazy loading --------------------------------------------------------------------------------------
def test_300_view_1080p_scene_loads_without_decoding(tmp_path, monkeypatch):
    n = 300
    _tiny_colmap(tmp_path, n=n, size=(1920, 1080), params=[1500.0, 1500.0, 960.0, 540.0], write_images=False)
    first = tmp_path / "images" / "view_00.png"
    Image.fromarray(np.full((1080, 1920, 3), 90, np.uint8)).save(first, compress_level=1)
    for i in range(1, n):
        target = tmp_path / "images" / f"view_{i:02d}.png"
        try:
            os.link(first, target)
        except OSError:
            shutil.copy(first, target)
    from PIL import ImageFile

    decodes = []
    real_load = ImageFile.ImageFile.load
    def counting_load(self):  # counts real decodes (a loaded image has no tiles left)
        if self.tile:
            decodes.append(self.filename)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", counting_load)
    info = read_scene(str(tmp_path))
    assert decodes == []  # headers only
    cams = info.train_cameras
    assert len(cams) == n and all((c.width, c.height) == (1600, 900) for c in cams)
    assert cams[7].fx == pytest.approx(1500 * 1600 / 1920) and cams[7].cy == pytest.approx(450)
    cache = ImageCache(budget_bytes=2 * 1600 * 900 * 3 * 4)
    img = cams[0].load_image(cache)
    assert img.shape == (3, 900, 1600) and float(img[0, 0, 0]) == pytest.approx(90 / 255, abs=1e-6)
    assert len(decodes) == 1
    cams[0].load_image(cache)
    assert len(decodes) == 1  # cached
    for c in cams[1:4]:
        c.load_image(cache)
    assert len(decodes) == 4 and cache.nbytes <= cache.budget


# ----- user errors ---------------------------------------------------------------------------------------
def raises_user_error(fn, *must_contain: str) -> str:
    with pytest.raises(UserError) as exc:
        fn()
    msg = str(exc.value)
    assert "\n" not in msg, msg
    for s in must_contain:
        assert s in msg, (s, msg)
    return msg


def test_error_missing_source(tmp_path):
    raises_user_error(lambda: read_scene(str(tmp_path / "nope")), str(tmp_path / "nope"), "not found")


def test_error_unrecognised_folder(tmp_path):
    raises_user_error(lambda: read_scene(str(tmp_path)), str(tmp_path), "sparse/0", "poses_bounds.npy",
                      "transforms_train.json")
    (tmp_path / "sparse" / "0").mkdir(parents=True)
    write_cameras_text(tmp_path / "sparse/0/cameras.txt", {1: ColmapCamera(1, "PINHOLE", 4, 4, np.ones(4))})
    raises_user_error(lambda: read_scene(str(tmp_path)), "no images.bin")


def test_error_invalid_resolution(tmp_path):
    raises_user_error(lambda: read_scene(str(tmp_path), resolution=0), "--resolution 0")
    raises_user_error(lambda: read_scene(str(tmp_path), eval=True, llffhold=0), "llffhold 0")


def test_error_colmap_missing_images(tmp_path):
    _tiny_colmap(tmp_path, n=3)
    (tmp_path / "images" / "view_01.png").unlink()
    raises_user_error(lambda: read_scene(str(tmp_path)), "images", "1 of 3", "view_01.png", "missing")
    raises_user_error(lambda: read_scene(str(tmp_path), images="images_2"), "images_2", "image folder not found")


def test_warns_without_points3d(tmp_path):
    _tiny_colmap(tmp_path, n=3, points=False)
    with pytest.warns(UserWarning, match="no points3D"):
        info = read_scene(str(tmp_path))
    assert info.point_cloud is None
    norm = info.nerf_normalization  # bounds fall back to the camera sphere
    np.testing.assert_allclose(info.bounds, [-norm["translate"] - norm["radius"], -norm["translate"] + norm["radius"]])


def test_warns_about_unregistered_images(tmp_path):
    _tiny_colmap(tmp_path, n=3)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "images" / "extra.png")
    with pytest.warns(UserWarning, match="1 image"):
        read_scene(str(tmp_path))


def test_error_unsupported_camera_model(tmp_path):
    _tiny_colmap(tmp_path, model="OPENCV_FISHEYE", params=[50, 50, 32, 24, 0.1, 0, 0, 0])
    raises_user_error(lambda: read_scene(str(tmp_path)), "OPENCV_FISHEYE", "cameras.txt",
                      "run `colmap image_undistorter` first")


def test_error_colmap_unknown_camera_id(tmp_path):
    images = _tiny_colmap(tmp_path, n=2)
    images[2].camera_id = 5
    write_images_text(tmp_path / "sparse/0/images.txt", images)
    raises_user_error(lambda: read_scene(str(tmp_path)), "images.txt", "camera 5")


def test_error_truncated_or_corrupt_binaries(tmp_path):
    src = need("beer") / "sparse" / "0"
    for name, reader in (("cameras.bin", read_cameras_binary), ("images.bin", read_images_binary),
                         ("points3D.bin", read_points3D_binary)):
        data = (src / name).read_bytes()
        bad = tmp_path / name
        for cut in (3, len(data) // 2, len(data) - 1):
            bad.write_bytes(data[:cut])
            raises_user_error(lambda: reader(bad), str(bad), "truncated or corrupt")
        bad.write_bytes(data + b"\x00\x01")
        raises_user_error(lambda: reader(bad), "trailing bytes")
        bad.write_bytes(b"\xff" * 8 + data[8:])  # absurd element count
        raises_user_error(lambda: reader(bad), "count")
    cams = bytearray((src / "cameras.bin").read_bytes())
    cams[12:16] = (99).to_bytes(4, "little")  # model id of the first camera
    (tmp_path / "cameras.bin").write_bytes(bytes(cams))
    raises_user_error(lambda: read_cameras_binary(tmp_path / "cameras.bin"), "unknown camera model id 99")
    # through read_scene too
    root = tmp_path / "scene"
    _tiny_colmap(root, n=2, binary=True)
    p = root / "sparse/0/images.bin"
    p.write_bytes(p.read_bytes()[:-5])
    raises_user_error(lambda: read_scene(str(root)), "images.bin", "truncated or corrupt")


def test_error_malformed_text(tmp_path):
    p = tmp_path / "cameras.txt"
    p.write_text("1 PINHOLE 64 48 50 50 32\n")
    raises_user_error(lambda: read_cameras_text(p), "cameras.txt:1", "PINHOLE needs 4 parameters")
    p.write_text("1 NOT_A_MODEL 64 48 50\n")
    raises_user_error(lambda: read_cameras_text(p), "unknown camera model 'NOT_A_MODEL'")
    q = tmp_path / "images.txt"
    q.write_text("1 1 0 0 0 0 0 0 1 a.png\n1.0 2.0\n")
    raises_user_error(lambda: read_images_text(q), "images.txt:1", "not a multiple of 3")
    r = tmp_path / "points3D.txt"
    r.write_text("1 0 0 0 1 2 3 0.5 1\n")
    raises_user_error(lambda: read_points3D_text(r), "points3D.txt:1")


def _tiny_llff(root: Path, n_rows: int, n_images: int, folder: str = "images") -> None:
    (root / folder).mkdir(parents=True)
    for i in range(n_images):
        Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(root / folder / f"img{i:03d}.png")
    rows = []
    for i in range(n_rows):
        P = np.zeros((3, 5))
        P[:, 0], P[:, 1], P[:, 2] = [0, 1, 0], [1, 0, 0], [0, 0, -1]  # down, right, back (camera looks along +z)
        P[:, 3] = [0.1 * i, 0, -4]
        P[:, 4] = [300, 400, 500]
        rows.append(np.concatenate([P.ravel(), [2.0, 6.0]]))
    np.save(root / "poses_bounds.npy", np.array(rows))


def test_llff_generated_and_errors(tmp_path):
    _tiny_llff(tmp_path / "ok", 4, 4, folder="images_4")
    info = read_scene(str(tmp_path / "ok"))
    cam = info.train_cameras[1]
    assert (cam.width, cam.height, cam.fx, cam.fy) == (40, 30, 50.0, 50.0)
    np.testing.assert_allclose(cam.R, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(cam.camera_center, [0.1, 0, -4])
    # frusta box: x from the widest corner ray at the far plane (6 * 20 / 50 = 2.4), z from near to far
    np.testing.assert_allclose(info.bounds[:, 2], [-2.0, 2.0])
    np.testing.assert_allclose(info.bounds[:, 0], [-2.4, 0.3 + 2.4])
    _tiny_llff(tmp_path / "rows", 5, 4)
    raises_user_error(lambda: read_scene(str(tmp_path / "rows")), "poses_bounds.npy", "5 pose rows", "4 images")
    (tmp_path / "shape").mkdir()
    np.save(tmp_path / "shape" / "poses_bounds.npy", np.zeros((3, 15)))
    raises_user_error(lambda: read_scene(str(tmp_path / "shape")), "poses_bounds.npy", "[N, 17]")
    (tmp_path / "noimg").mkdir()
    np.save(tmp_path / "noimg" / "poses_bounds.npy", np.zeros((3, 17)))
    raises_user_error(lambda: read_scene(str(tmp_path / "noimg")), "images", "image folder not found")


def test_error_blender_missing_image_and_bad_json(tmp_path):
    (tmp_path / "train").mkdir()
    Image.fromarray(np.zeros((8, 8, 4), np.uint8)).save(tmp_path / "train" / "r_0.png")
    frame = {"transform_matrix": np.eye(4).tolist()}
    doc = {"camera_angle_x": 0.69, "frames": [dict(frame, file_path="./train/r_0"),
                                              dict(frame, file_path="./train/r_1")]}
    (tmp_path / "transforms_train.json").write_text(json.dumps(doc))
    raises_user_error(lambda: read_scene(str(tmp_path)), "transforms_train.json", "1 of 2", "./train/r_1")
    doc["frames"] = doc["frames"][:1]
    (tmp_path / "transforms_train.json").write_text(json.dumps(doc))
    assert len(read_scene(str(tmp_path)).train_cameras) == 1  # test json is optional
    (tmp_path / "transforms_train.json").write_text("{not json")
    raises_user_error(lambda: read_scene(str(tmp_path)), "transforms_train.json", "cannot read")
    (tmp_path / "transforms_train.json").write_text(json.dumps({"frames": []}))
    raises_user_error(lambda: read_scene(str(tmp_path)), "camera_angle_x")


def test_error_unreadable_image(tmp_path):
    _tiny_colmap(tmp_path, n=2)
    (tmp_path / "images" / "view_00.png").write_bytes(b"not a png")
    raises_user_error(lambda: read_scene(str(tmp_path)), "view_00.png", "not a readable image")
    raises_user_error(lambda: read_image(tmp_path / "images" / "view_00.png"), "cannot decode")
    raises_user_error(lambda: read_image_size(tmp_path / "nothing.png"), "image not found")


# ----- pixel pipeline ------------------------------------------------------------------------------------
def test_read_image_modes(tmp_path):
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(grey, "L").save(tmp_path / "l.png")
    np.testing.assert_array_equal(read_image(tmp_path / "l.png"), np.repeat(grey[..., None], 3, axis=2))
    Image.fromarray(np.stack([grey, 255 - grey], axis=-1), "LA").save(tmp_path / "la.png")
    la = read_image(tmp_path / "la.png")
    assert la.shape == (3, 4, 4) and np.array_equal(la[..., 3], 255 - grey)
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "i16.png")  # 16-bit grey PNG
    np.testing.assert_array_equal(read_image(tmp_path / "i16.png")[..., 0], grey)
    pal = Image.fromarray(grey, "L").convert("P")
    pal.info["transparency"] = 0
    pal.save(tmp_path / "p.png", transparency=0)
    assert read_image(tmp_path / "p.png").shape == (3, 4, 4)
    Image.fromarray(np.zeros((3, 4, 3), np.uint8)).save(tmp_path / "rgb.jpg")
    assert read_image(tmp_path / "rgb.jpg").shape == (3, 4, 3)


def test_prepare_pixels_masks_keep_labels():
    cam = Camera(0, "m", 8, 6, 10.0, 10.0, 4.0, 3.0, np.eye(4))
    labels = np.kron(np.arange(12, dtype=np.int64).reshape(3, 4) * 100_003, np.ones((4, 4), np.int64))  # 12x16
    out = prepare_pixels(labels, cam, is_mask=True)
    assert out.dtype == np.int64 and out.shape == (6, 8)
    assert set(np.unique(out)) == set(np.unique(labels))  # never blended
    np.testing.assert_array_equal(out, labels[1::2, 1::2])
    b = prepare_pixels(labels > 500_000, cam, is_mask=True)
    assert b.dtype == np.bool_ and np.array_equal(b, out > 500_000)
    u16 = prepare_pixels(labels.astype(np.uint16)[..., None], cam, is_mask=True)
    assert u16.dtype == np.uint16 and u16.shape == (6, 8)
    same = prepare_pixels(out, cam, is_mask=True)
    np.testing.assert_array_equal(same, out)
    # nearest picks the source pixel under each output pixel centre (3x: the middle one, no 1/3 px shift)
    fine = np.arange(18 * 24, dtype=np.int32).reshape(18, 24)
    np.testing.assert_array_equal(prepare_pixels(fine, cam, is_mask=True), fine[1::3, 1::3])


def test_prepare_pixels_composites_like_full_resolution():
    """Premultiplied resampling: compositing after the resize equals compositing first (Inria's order)."""
    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 256, (40, 60, 4)).astype(np.uint8)
    rgba[..., 3] = np.where(rng.random((40, 60)) < 0.3, 0, rgba[..., 3])
    for bg in ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (0.2, 0.5, 0.9)):
        cam = Camera(0, "c", 30, 20, 10.0, 10.0, 15.0, 10.0, np.eye(4), background=bg)
        out = prepare_pixels(rgba, cam, is_mask=False)
        a = rgba[..., 3:] / 255.0
        first = rgba[..., :3] / 255.0 * a + np.array(bg) * (1 - a)
        expected = first.reshape(20, 2, 30, 2, 3).mean(axis=(1, 3))  # exact 2x2 area average
        assert out.dtype == np.float32 and out.shape == (20, 30, 3)
        np.testing.assert_allclose(out, expected, atol=2e-6)
