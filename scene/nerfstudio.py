"""nerfstudio data folders (``transforms.json``) → :class:`scene.types.SceneInfo`.

The format is followed from nerfstudio's code at commit 50e0e3c7 (v1.1.5-30, 2025-07):
``nerfstudio/data/dataparsers/nerfstudio_dataparser.py`` (what is read) and
``nerfstudio/process_data/colmap_utils.py::colmap_to_json`` (what ``ns-process-data`` writes):

- intrinsics ``fl_x fl_y cx cy w h`` at the top level (shared) or in every frame; COLMAP's pixel-centre
  convention (nerfstudio casts rays through ``pixel + 0.5``), so they are used as they are;
- ``camera_model``: the perspective models (PINHOLE, SIMPLE_PINHOLE, SIMPLE_RADIAL, RADIAL, OPENCV) with
  ``k1 k2 k3 p1 p2`` (or ``distortion_params`` = [k1, k2, k3, k4, p1, p2]) are undistorted by the same
  OpenCV path as COLMAP cameras (images linear, masks nearest); fisheye / equirectangular / ... are refused;
- ``transform_matrix``: camera-to-world in OpenGL axes (x right, y up, z back) → world-to-camera in OpenCV
  axes here; the world frame is the file's own ("saved coordinates");
- ``applied_transform`` (3x4, what ns-process-data applied to the COLMAP world; implied for old files when
  ``colmap/sparse/0`` exists) and ``applied_scale`` are recorded in ``SceneInfo.extra``, not applied: a
  splatfacto model is tied to them through its ``dataparser_transforms.json`` (scene/model_sources.py);
- ``file_path`` / ``mask_path`` relative to the json's folder; frames sorted by file name as nerfstudio
  does; ``-i images_N`` reads nerfstudio's downscaled copies ``images_N/<file name>`` (masks from
  ``masks_N`` when present);
- ``ply_file_path`` (ns-process-data's ``sparse_pc.ply``, in the file's frame) gives the initial points.

Per-frame ``mask_path`` files are nerfstudio's loss masks (0 = ignore). They are exposed as
``extra["mask_dir"]`` when every frame has its own mask in one folder, named like its image, so that
``segment.py`` uses them when ``--masks`` is not given; a single mask shared by every frame
(ns-process-data's ``--camera-mask-path``, a lens crop) is not an object mask and is ignored.
"""
from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np

from scene.cameras import Camera, Distortion
from scene.dataset_readers import _log_capped, _sized_camera, _split, get_nerfpp_norm
from scene.types import SceneInfo
from utils.errors import UserError
from utils.image_io import read_image_size

log = logging.getLogger(__name__)

TRANSFORMS = "transforms.json"
PERSPECTIVE_MODELS = ("PINHOLE", "SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV")
# ns-process-data's default applied_transform (COLMAP world, -y up guess → z up), used by nerfstudio for
# transforms.json files written before the field existed when colmap/sparse/0 is present.
DEFAULT_APPLIED_TRANSFORM = ((0.0, 1.0, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0), (0.0, 0.0, -1.0, 0.0))
_INTRINSICS = ("fl_x", "fl_y", "cx", "cy", "w", "h")
_DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2", "distortion_params")


def is_nerfstudio_folder(source: Path) -> bool:
    return (source / TRANSFORMS).is_file()


def _load_json(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: cannot read ({str(e).splitlines()[0]}); re-export it with ns-process-data") \
            from None
    if not isinstance(meta, dict) or not isinstance(meta.get("frames"), list) or not meta["frames"]:
        raise UserError(f"{path}: expected a JSON object with a non-empty 'frames' list (nerfstudio's "
                        f"transforms.json); re-export it with ns-process-data")
    return meta


def _distortion(d: dict, where: str) -> Optional[tuple[float, ...]]:
    """OpenCV distCoeffs (k1, k2, p1, p2, k3) from nerfstudio's keys, None when all are zero."""
    try:
        if "distortion_params" in d:
            k1, k2, k3, k4, p1, p2 = (float(v) for v in d["distortion_params"])
        else:
            k1, k2, k3, k4, p1, p2 = (float(d.get(k, 0.0)) for k in ("k1", "k2", "k3", "k4", "p1", "p2"))
    except (TypeError, ValueError) as e:
        raise UserError(f"{where}: invalid distortion coefficients ({e}); expected numbers k1 k2 k3 k4 p1 p2") \
            from None
    if k4 != 0.0:  # nerfstudio's k4 is an r^8 radial term, OpenCV's k4 a rational-model term: no exact match
        raise UserError(f"{where}: k4 = {k4} is not supported (nerfstudio's r^8 term has no OpenCV equivalent); "
                        f"undistort the images first (e.g. `colmap image_undistorter`) and use PINHOLE")
    coeffs = (k1, k2, p1, p2, k3)
    return None if not any(coeffs) else coeffs


def _check_model(model: Any, where: str) -> None:
    if model is not None and str(model) not in PERSPECTIVE_MODELS:
        raise UserError(f"{where}: camera_model {model} is not supported (only perspective cameras: "
                        f"{', '.join(PERSPECTIVE_MODELS)}); undistort the images to PINHOLE first (e.g. "
                        f"`colmap image_undistorter`, or ns-process-data --camera-type perspective)")


def _image_path(data_dir: Path, file_path: str, images: str, default_folder: str) -> Path:
    """nerfstudio's _get_fname: the file itself, or ``<data>/<images>_N/<file name>`` for a downscaled copy."""
    p = Path(file_path)
    if p.is_absolute():
        return p if images == default_folder else data_dir / images / p.name
    return data_dir / p if images == default_folder else data_dir / images / p.name


def _view_name(file_path: str) -> str:
    """Image name the masks are matched by: the path without extension, relative to its image folder."""
    parts = [q for q in Path(file_path).with_suffix("").parts if q not in (".", "")]
    if len(parts) > 1 and (parts[0] == "images" or parts[0].startswith("images_")):
        parts = parts[1:]
    return "/".join(parts) if not Path(file_path).is_absolute() else Path(file_path).stem


def _mask_dir(data_dir: Path, names: list[str], mask_paths: list[Optional[str]], images: str,
              json_path: Path) -> Optional[str]:
    """The folder of per-frame masks when segment.py can use it as a mask folder, else None (with a reason)."""
    given = [m for m in mask_paths if m]
    if not given:
        return None
    if len(set(given)) == 1 and len(given) > 1:
        log.info("%s: every frame shares the mask %s (a camera/lens mask); not used as object masks",
                 json_path, given[0])
        return None
    if len(given) != len(names):
        warnings.warn(f"{json_path}: only {len(given)} of {len(names)} frames have a mask_path; nerfstudio needs "
                      f"all or none, so they are not used as default masks (pass --masks)", stacklevel=3)
        return None
    suffix = images[len("images"):] if images.startswith("images_") else ""
    paths = []
    for m in given:
        p = Path(m) if Path(m).is_absolute() else data_dir / m
        if suffix and (p.parent.parent / f"{p.parent.name}{suffix}" / p.name).is_file():
            p = p.parent.parent / f"{p.parent.name}{suffix}" / p.name  # nerfstudio's masks_N for images_N
        paths.append(p)
    folders = {p.parent for p in paths}
    from utils.masks import match_key

    if len(folders) != 1 or any(match_key(p.name) != match_key(n) for p, n in zip(paths, names)):
        warnings.warn(f"{json_path}: the frames' mask_path files are not one folder of masks named like the "
                      f"images, so segment.py cannot use them by default; pass --masks", stacklevel=3)
        return None
    return str(folders.pop())


def read_nerfstudio(src: Path, images: str, resolution: int, eval: bool, background: tuple[float, float, float],
                    llffhold: int) -> SceneInfo:
    """Read ``src/transforms.json`` (see the module docstring); split like the other readers (every
    ``llffhold``-th view of the sorted names is a test view with ``eval``)."""
    json_path = src / TRANSFORMS
    meta = _load_json(json_path)
    _check_model(meta.get("camera_model"), str(json_path))
    shared_dist = any(k in meta for k in _DISTORTION_KEYS)
    dist_shared = _distortion(meta, str(json_path)) if shared_dist else None
    frames = meta["frames"]
    try:
        order = np.argsort([str(Path(str(f["file_path"]))) for f in frames], kind="stable")
    except (KeyError, TypeError) as e:
        raise UserError(f"{json_path}: a frame has no file_path ({e}); every frame needs file_path and "
                        f"transform_matrix") from None

    cameras: list[Camera] = []
    sizes: list[tuple[int, int]] = []
    mask_paths: list[Optional[str]] = []
    missing: list[str] = []
    for uid, idx in enumerate(order):
        frame = frames[int(idx)]
        where = f"{json_path}: frame {int(idx)} ({frame.get('file_path')})"
        _check_model(frame.get("camera_model"), where)
        try:
            fx, fy, cx, cy = (float(frame[k] if k in frame else meta[k]) for k in ("fl_x", "fl_y", "cx", "cy"))
            w, h = (int(frame[k] if k in frame else meta[k]) for k in ("w", "h"))
            c2w = np.asarray(frame["transform_matrix"], dtype=np.float64)
            if c2w.shape not in ((4, 4), (3, 4)) or not np.isfinite(c2w).all():
                raise ValueError(f"transform_matrix has shape {c2w.shape} or non-finite values")
        except KeyError as e:
            raise UserError(f"{where}: no {e.args[0]} (neither in the frame nor at the top level); nerfstudio "
                            f"needs {' '.join(_INTRINSICS)} and transform_matrix") from None
        except (TypeError, ValueError) as e:
            raise UserError(f"{where}: invalid camera ({e}); fix the file or re-export it") from None
        coeffs = dist_shared if shared_dist else _distortion(frame, where)
        path = _image_path(src, str(frame["file_path"]), images, "images")
        if not path.is_file():
            missing.append(str(path))
            continue
        c2w4 = np.eye(4)
        c2w4[:3, :] = c2w[:3, :]
        c2w4[:3, 1:3] *= -1  # OpenGL camera axes (y up, z back) → OpenCV (y down, z forward)
        w2c = np.linalg.inv(c2w4)
        dist = Distortion("OPENCV", coeffs) if coeffs is not None else None
        base = Camera(uid, _view_name(str(frame["file_path"])), w, h, fx, fy, cx, cy, w2c, str(path), dist,
                      background)
        sizes.append(read_image_size(path))
        cameras.append(_sized_camera(base, sizes[-1], resolution))
        mask_paths.append(frame.get("mask_path"))
    if missing:
        raise UserError(f"{json_path}: {len(missing)} of {len(frames)} frames have no image file (e.g. "
                        f"{missing[0]}); copy the images there or pass -i with the image folder")
    _log_capped(sizes, resolution)

    applied = meta.get("applied_transform")
    if applied is None and (src / "colmap" / "sparse" / "0").is_dir():
        applied = [list(r) for r in DEFAULT_APPLIED_TRANSFORM]
    if applied is not None:
        applied = np.asarray(applied, dtype=np.float64)
        if applied.shape != (3, 4):
            raise UserError(f"{json_path}: applied_transform must be 3x4, got shape {applied.shape}")
    pcd, points_file = None, None
    if meta.get("ply_file_path"):
        points_file = src / str(meta["ply_file_path"])
        if points_file.is_file():
            from utils.ply import read_point_cloud_ply

            pcd = read_point_cloud_ply(points_file)
        else:
            warnings.warn(f"{json_path}: ply_file_path {points_file} not found; no initial points", stacklevel=2)
            points_file = None
    if pcd is not None and len(pcd.points):
        bounds = np.stack([pcd.points.min(axis=0), pcd.points.max(axis=0)]).astype(np.float64)
    else:
        norm = get_nerfpp_norm(cameras)
        bounds = np.stack([-norm["translate"] - norm["radius"], -norm["translate"] + norm["radius"]])
    names = [c.image_name for c in cameras]
    train, test = _split(cameras, eval, llffhold)
    return SceneInfo("nerfstudio", str(src), train, test, pcd, get_nerfpp_norm(train or cameras), bounds,
                     {"image_dir": str(src / images) if images != "images" else str(src),
                      "transforms_file": str(json_path),
                      "applied_transform": applied.tolist() if applied is not None else None,
                      "applied_transform_given": meta.get("applied_transform") is not None,
                      "applied_scale": float(meta["applied_scale"]) if "applied_scale" in meta else None,
                      "mask_dir": _mask_dir(src, names, mask_paths, images, json_path),
                      "points_file": str(points_file) if points_file else None})
