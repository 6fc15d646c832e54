"""Scene folders → :class:`scene.types.SceneInfo`, whatever the format (COLMAP, LLFF, NeRF-synthetic,
nerfstudio's transforms.json: scene/nerfstudio.py).

Cameras are built from file headers only; pixels are decoded later, on demand (``Camera.load_image`` and
``ImageCache``), so a scene with hundreds of 1080p views loads in well under a second.

Conventions (see ``scene/cameras.py``): world-to-camera in OpenCV axes, COLMAP pixel centres. Views are
sorted by name (COLMAP, LLFF) or kept in JSON order (NeRF-synthetic), like Inria. ``image_name`` is the
image path relative to its folder without extension: the file stem for flat folders, ``train/r_0`` for
NeRF-synthetic (its train and test folders reuse stems, and masks are matched by this name).
"""
from __future__ import annotations

import json
import logging
import math
import re
import warnings
from pathlib import Path
from typing import Optional

import numpy as np

from scene.cameras import Camera, Distortion
from scene.colmap_loader import (CAMERA_MODEL_NAMES, ColmapCamera, find_model_file, read_cameras, read_images,
                                 read_points3D)
from scene.types import BasicPointCloud, SceneInfo
from utils.errors import UserError
from utils.image_io import IMAGE_EXTENSIONS, read_image_size

log = logging.getLogger(__name__)

BLENDER_BOUNDS = np.array([[-1.3, -1.3, -1.3], [1.3, 1.3, 1.3]])  # Inria's random-init cube for NeRF-synthetic
_SUPPORTED_MODELS = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV")
_EXPECTED = ("sparse/0/{cameras,images}.{bin,txt} (COLMAP), poses_bounds.npy with images/ or images_N/ (LLFF), "
             "transforms_train.json (NeRF-synthetic) or transforms.json (nerfstudio)")


def read_scene(source_path: str, images: str = "images", resolution: int = -1, eval: bool = False,
               white_background: bool = False, llffhold: int = 8) -> SceneInfo:
    """Read any supported scene folder.

    resolution follows Inria: -1 caps the longest side at 1600 px, 1/2/4/8 divide the size, any other
    positive value is a target width. With ``eval`` every ``llffhold``-th view (index % llffhold == 0 in
    sorted order) is the test split; NeRF-synthetic uses its test json instead (and folds it into training
    without ``eval``, as Inria does).
    """
    src = Path(source_path)
    if not src.is_dir():
        raise UserError(f"{src}: source folder not found; pass -s with a scene folder holding {_EXPECTED}")
    if resolution != -1 and resolution <= 0:
        raise UserError(f"--resolution {resolution}: invalid; use -1 (auto), 1, 2, 4, 8 or a target width in px")
    if eval and llffhold < 1:
        raise UserError(f"llffhold {llffhold}: invalid; hold out every N-th view with N >= 1 (Inria uses 8)")
    kind = detect_scene_type(src)
    background = (1.0, 1.0, 1.0) if white_background else (0.0, 0.0, 0.0)
    if kind == "colmap":
        return _read_colmap(src, images, resolution, eval, background, llffhold)
    if kind == "llff":
        return _read_llff(src, images, resolution, eval, background, llffhold)
    if kind == "nerfstudio":
        from scene.nerfstudio import read_nerfstudio

        return read_nerfstudio(src, images, resolution, eval, background, llffhold)
    return _read_blender(src, resolution, eval, background)


def detect_scene_type(source: Path) -> str:
    """"colmap" if sparse/0 holds images.{bin,txt}, else "llff" (poses_bounds.npy), else "blender"
    (transforms_train.json), else "nerfstudio" (transforms.json)."""
    sparse = source / "sparse" / "0"
    if find_model_file(sparse, "images") is not None:
        return "colmap"
    if (source / "poses_bounds.npy").is_file():
        return "llff"
    if (source / "transforms_train.json").is_file():
        return "blender"
    if (source / "transforms.json").is_file():
        return "nerfstudio"
    hint = ""
    if find_model_file(sparse, "cameras") is not None:
        hint = " (sparse/0 has cameras but no images.bin/images.txt, and there is no poses_bounds.npy)"
    raise UserError(f"{source}: unrecognised scene folder{hint}; expected {_EXPECTED}")


# ----- shared helpers ----------------------------------------------------------------------------------
def target_resolution(width: int, height: int, resolution: int) -> tuple[int, int]:
    """Inria's loadCam sizing, except that -1 caps the longest side (not only the width) at 1600 px."""
    if resolution in (1, 2, 4, 8):
        return max(1, round(width / resolution)), max(1, round(height / resolution))
    if resolution == -1:
        longest = max(width, height)
        scale = longest / 1600 if longest > 1600 else 1.0
    else:
        scale = width / resolution
    # +1e-6: int() of 1920 / (1920 / 1600) must give 1600, not 1599
    return max(1, int(width / scale + 1e-6)), max(1, int(height / scale + 1e-6))


def get_nerfpp_norm(cameras: list[Camera]) -> dict:
    """Inria's getNerfppNorm: centre of the camera centres and 1.1 × the largest distance to it."""
    centres = np.stack([c.camera_center for c in cameras], axis=1)  # [3, N]
    center = centres.mean(axis=1, keepdims=True)
    diagonal = float(np.max(np.linalg.norm(centres - center, axis=0)))
    return {"translate": -center.flatten(), "radius": diagonal * 1.1}


def _sized_camera(base: Camera, file_size: tuple[int, int], resolution: int) -> Camera:
    """Intrinsics given at ``base``'s size → at the image file's size → at the requested resolution."""
    cam = base if (base.width, base.height) == file_size else base.scaled(*file_size)
    target = target_resolution(file_size[0], file_size[1], resolution)
    return cam if target == file_size else cam.scaled(*target)


def _log_capped(file_sizes: list[tuple[int, int]], resolution: int) -> None:
    if resolution == -1 and any(max(s) > 1600 for s in file_sizes):
        log.info("large input images: longest side rescaled to 1600 px; pass -r 1 to keep the full size")


def _split(cameras: list[Camera], eval: bool, llffhold: int) -> tuple[list[Camera], list[Camera]]:
    if not eval:
        return cameras, []
    train = [c for i, c in enumerate(cameras) if i % llffhold != 0]
    test = [c for i, c in enumerate(cameras) if i % llffhold == 0]
    return train, test


def _point_cloud(sparse: Path) -> tuple[Optional[BasicPointCloud], Optional[Path]]:
    if find_model_file(sparse, "points3D") is None:
        return None, None
    pts, path = read_points3D(sparse)
    xyz = pts.xyz.astype(np.float32)
    return BasicPointCloud(xyz, pts.rgb.astype(np.float32) / 255.0, np.zeros_like(xyz)), path


def _frustum_bounds(cameras: list[Camera], near_far: np.ndarray) -> np.ndarray:
    """AABB [2, 3] of every camera's frustum between its near and far depth (near_far: [N, 2])."""
    corners = []
    for cam, (near, far) in zip(cameras, near_far):
        px = np.array([[0, 0], [cam.width, 0], [0, cam.height], [cam.width, cam.height]], dtype=np.float64)
        rays = np.stack([(px[:, 0] - cam.cx) / cam.fx, (px[:, 1] - cam.cy) / cam.fy, np.ones(4)], axis=1)
        pts_cam = np.concatenate([rays * near, rays * far])                 # [8, 3] camera frame
        corners.append((pts_cam - cam.T) @ cam.R)                            # R^T (p - t), row-vector form
    allc = np.concatenate(corners)
    return np.stack([allc.min(axis=0), allc.max(axis=0)])


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))


def _colmap_intrinsics(cam: ColmapCamera, cameras_file: Path) -> tuple[float, float, float, float,
                                                                         Optional[Distortion]]:
    """(fx, fy, cx, cy, distortion) of a supported COLMAP model; any other model is a UserError."""
    p = [float(v) for v in cam.params]
    if cam.model == "SIMPLE_PINHOLE":
        return p[0], p[0], p[1], p[2], None
    if cam.model == "PINHOLE":
        return p[0], p[1], p[2], p[3], None
    if cam.model == "SIMPLE_RADIAL":
        return p[0], p[0], p[1], p[2], Distortion(cam.model, (p[3], 0.0, 0.0, 0.0))
    if cam.model == "RADIAL":
        return p[0], p[0], p[1], p[2], Distortion(cam.model, (p[3], p[4], 0.0, 0.0))
    if cam.model == "OPENCV":
        return p[0], p[1], p[2], p[3], Distortion(cam.model, (p[4], p[5], p[6], p[7]))
    assert cam.model in CAMERA_MODEL_NAMES
    raise UserError(f"{cameras_file}: camera model {cam.model} (camera {cam.id}) is not supported (only "
                    f"{', '.join(_SUPPORTED_MODELS)}); run `colmap image_undistorter` first")


# ----- COLMAP --------------------------------------------------------------------------------------------
def _read_colmap(src: Path, images: str, resolution: int, eval: bool, background: tuple[float, float, float],
                 llffhold: int) -> SceneInfo:
    sparse = src / "sparse" / "0"
    col_images, images_file = read_images(sparse)
    col_cameras, cameras_file = read_cameras(sparse)
    img_dir = src / images
    if not img_dir.is_dir():
        raise UserError(f"{img_dir}: image folder not found; pass -i/--images with the folder (inside {src}) "
                        f"holding the images registered in {images_file.name}")
    entries = sorted(col_images.values(), key=lambda im: im.name)
    missing = [im.name for im in entries if not (img_dir / im.name).is_file()]
    if missing:
        raise UserError(f"{img_dir}: {len(missing)} of {len(entries)} images registered in {images_file} are "
                        f"missing (e.g. {missing[0]}); copy them there or pass -i/--images with the right folder")
    registered = {(img_dir / im.name).resolve() for im in entries}
    unregistered = sum(1 for p in img_dir.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
                       and p.resolve() not in registered)
    if unregistered:
        warnings.warn(f"{img_dir}: {unregistered} image(s) not registered in {images_file.name} are ignored")

    cameras: list[Camera] = []
    sizes: list[tuple[int, int]] = []
    reshaped: list[str] = []
    for uid, im in enumerate(entries):
        cc = col_cameras.get(im.camera_id)
        if cc is None:
            raise UserError(f"{images_file}: image {im.name} refers to camera {im.camera_id}, absent from "
                            f"{cameras_file.name}; re-export the model")
        fx, fy, cx, cy, dist = _colmap_intrinsics(cc, cameras_file)
        path = img_dir / im.name
        base = Camera(uid, str(Path(im.name).with_suffix("")), cc.width, cc.height, fx, fy, cx, cy,
                      im.world_to_camera(), str(path), dist, background)
        sizes.append(read_image_size(path))
        if abs(sizes[-1][0] * cc.height - sizes[-1][1] * cc.width) > 0.01 * cc.width * cc.height:
            reshaped.append(im.name)
        cameras.append(_sized_camera(base, sizes[-1], resolution))
    if not cameras:
        raise UserError(f"{images_file}: no registered images; re-run the reconstruction")
    if reshaped:
        warnings.warn(f"{img_dir}: {len(reshaped)} image(s) (e.g. {reshaped[0]}) have another aspect ratio than "
                      f"their camera in {cameras_file.name}; intrinsics were scaled per axis")
    _log_capped(sizes, resolution)

    pcd, points_file = _point_cloud(sparse)
    if pcd is not None and len(pcd.points):
        bounds = np.stack([pcd.points.min(axis=0), pcd.points.max(axis=0)]).astype(np.float64)
    else:
        warnings.warn(f"{sparse}: no points3D; the point cloud must be initialised randomly")
        norm = get_nerfpp_norm(cameras)
        bounds = np.stack([-norm["translate"] - norm["radius"], -norm["translate"] + norm["radius"]])
    train, test = _split(cameras, eval, llffhold)
    return SceneInfo("colmap", str(src), train, test, pcd, get_nerfpp_norm(train or cameras), bounds,
                     {"image_dir": str(img_dir), "model_dir": str(sparse),
                      "points_file": str(points_file) if points_file else None})


# ----- LLFF ----------------------------------------------------------------------------------------------
def _llff_image_dir(src: Path, images: str) -> Path:
    cand = src / images
    if cand.is_dir():
        return cand
    if images == "images":
        found = sorted((int(m.group(1)), p) for p in src.iterdir()
                       if p.is_dir() and (m := re.fullmatch(r"images_(\d+)", p.name)))
        if found:
            return found[0][1]
    raise UserError(f"{cand}: image folder not found; LLFF scenes need images/ or images_N/ beside "
                    f"poses_bounds.npy (or pass -i/--images)")


def _read_llff(src: Path, images: str, resolution: int, eval: bool, background: tuple[float, float, float],
               llffhold: int) -> SceneInfo:
    pb_path = src / "poses_bounds.npy"
    try:
        pb = np.load(pb_path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UserError(f"{pb_path}: cannot read ({e}); regenerate it with LLFF's imgs2poses.py") from None
    if pb.ndim != 2 or pb.shape[1] != 17:
        raise UserError(f"{pb_path}: expected an [N, 17] array, got shape {pb.shape}; regenerate it with "
                        f"LLFF's imgs2poses.py")
    img_dir = _llff_image_dir(src, images)
    files = _image_files(img_dir)
    if len(files) != pb.shape[0]:
        raise UserError(f"{pb_path}: {pb.shape[0]} pose rows but {len(files)} images in {img_dir}; rows follow "
                        f"the sorted image names, so use the matching image folder (-i) or regenerate the poses")
    cameras: list[Camera] = []
    sizes: list[tuple[int, int]] = []
    near_far = pb[:, 15:17].astype(np.float64)
    for uid, (row, path) in enumerate(zip(pb.astype(np.float64), files)):
        P = row[:15].reshape(3, 5)
        h_file, w_file, focal = P[:, 4]
        # LLFF columns are [down, right, back]; OpenCV camera-to-world is [right, down, forward].
        c2w_rot = np.stack([P[:, 1], P[:, 0], -P[:, 2]], axis=1)
        w2c = np.eye(4)
        w2c[:3, :3] = c2w_rot.T
        w2c[:3, 3] = -c2w_rot.T @ P[:, 3]
        w, h = read_image_size(path)
        sizes.append((w, h))
        # hwf describes the original capture: rescale the focal to the stored images, per axis.
        base = Camera(uid, path.stem, w, h, focal * w / w_file, focal * h / h_file, w / 2.0, h / 2.0, w2c,
                      str(path), None, background)
        cameras.append(_sized_camera(base, (w, h), resolution))
    _log_capped(sizes, resolution)

    pcd, points_file = _point_cloud(src / "sparse" / "0")
    bounds = _frustum_bounds(cameras, near_far)
    train, test = _split(cameras, eval, llffhold)
    return SceneInfo("llff", str(src), train, test, pcd, get_nerfpp_norm(train or cameras), bounds,
                     {"image_dir": str(img_dir), "points_file": str(points_file) if points_file else None,
                      "near_far": {c.image_name: (float(n), float(f)) for c, (n, f) in zip(cameras, near_far)}})


# ----- NeRF-synthetic ------------------------------------------------------------------------------------
def _resolve_frame_path(src: Path, file_path: str) -> Optional[Path]:
    p = src / file_path
    if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file():
        return p
    for ext in (".png", ".jpg", ".jpeg", ".PNG", ".JPG"):
        q = p.with_name(p.name + ext)
        if q.is_file():
            return q
    return None


def _read_transforms(src: Path, json_path: Path, background: tuple[float, float, float], resolution: int,
                     first_uid: int, sizes: list[tuple[int, int]]) -> list[Camera]:
    try:
        contents = json.loads(json_path.read_text(encoding="utf-8"))
        fovx = float(contents["camera_angle_x"])
        frames = list(contents["frames"])
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{json_path}: cannot read ({e}); re-export the transforms file") from None
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{json_path}: missing or invalid field {e}; it needs camera_angle_x and frames") from None
    cameras: list[Camera] = []
    missing: list[str] = []
    for idx, frame in enumerate(frames):
        try:
            file_path = str(frame["file_path"])
            c2w = np.array(frame["transform_matrix"], dtype=np.float64)
            if c2w.shape != (4, 4):
                raise ValueError(f"transform_matrix has shape {c2w.shape}")
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"{json_path}: frame {idx} is invalid ({e}); each frame needs file_path and a 4x4 "
                            f"transform_matrix") from None
        path = _resolve_frame_path(src, file_path)
        if path is None:
            missing.append(file_path)
            continue
        c2w[:3, 1:3] *= -1  # OpenGL/Blender camera axes (y up, z back) → OpenCV (y down, z forward)
        w2c = np.linalg.inv(c2w)
        w, h = read_image_size(path)
        sizes.append((w, h))
        focal = 0.5 * w / math.tan(0.5 * fovx)  # Inria: fovy derived from this focal, so fy = fx
        name = str(path.relative_to(src).with_suffix("").as_posix())
        base = Camera(first_uid + len(cameras), name, w, h, focal, focal, w / 2.0, h / 2.0, w2c, str(path), None,
                      background)
        cameras.append(_sized_camera(base, (w, h), resolution))
    if missing:
        raise UserError(f"{json_path}: {len(missing)} of {len(frames)} frames have no image file (e.g. "
                        f"{missing[0]}[.png]); copy the images beside the json or fix file_path")
    return cameras


def _read_blender(src: Path, resolution: int, eval: bool, background: tuple[float, float, float]) -> SceneInfo:
    sizes: list[tuple[int, int]] = []
    train = _read_transforms(src, src / "transforms_train.json", background, resolution, 0, sizes)
    test_json = src / "transforms_test.json"
    test = (_read_transforms(src, test_json, background, resolution, len(train), sizes) if test_json.is_file()
            else [])
    if not train:
        raise UserError(f"{src / 'transforms_train.json'}: no frames; re-export the transforms file")
    _log_capped(sizes, resolution)
    if not eval:
        train, test = train + test, []
    return SceneInfo("blender", str(src), train, test, None, get_nerfpp_norm(train), BLENDER_BOUNDS.copy(),
                     {"image_dir": str(src)})

