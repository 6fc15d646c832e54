"""Inria's model folder, read and written so Inria's tools (and viewers) and ours share it::

    <model>/cfg_args                                   Namespace(...) of ModelParams (read without eval)
    <model>/cameras.json                               one entry per camera (Inria's camera_to_JSON)
    <model>/input.ply                                  initial points (utils.ply.write_point_cloud_ply)
    <model>/point_cloud/iteration_<N>/point_cloud.ply  the Gaussians (utils.ply)

cameras.json: ``rotation`` is the camera-to-world 3x3 rotation (rows as nested lists), ``position`` the
camera centre, ``fx``/``fy`` in pixels; Inria assumes a centred principal point. Off-centre cameras get
two extra keys ``cx``/``cy`` that Inria's readers ignore and ours read back.
"""
from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from arguments import ModelParams, model_params_from_cfg, read_cfg_args
from scene.cameras import Camera
from scene.gaussian_model import GaussianModel
from utils.errors import UserError
from utils.io import atomic_write_text

_ITER_DIR = re.compile(r"iteration_(\d+)$")


def _point_cloud_dir(model_path: Path) -> Path:
    if not model_path.is_dir():
        raise UserError(f"{model_path}: model folder not found; pass -m/--model_path the folder train.py wrote")
    pc = model_path / "point_cloud"
    if not pc.is_dir():
        raise UserError(f"{pc}: missing; {model_path} is not a trained model folder (expected "
                        f"point_cloud/iteration_N/point_cloud.ply) - train it or pass the right -m")
    return pc


def available_iterations(model_path: str | Path) -> list[int]:
    """Iterations N with point_cloud/iteration_N/point_cloud.ply present, ascending."""
    pc = _point_cloud_dir(Path(model_path))
    found = []
    for d in pc.iterdir():
        m = _ITER_DIR.match(d.name)
        if m and d.is_dir() and (d / "point_cloud.ply").is_file():
            found.append(int(m.group(1)))
    return sorted(found)


def find_iteration(model_path: str | Path, iteration: Optional[int] = None) -> int:
    """The newest saved iteration, or check that ``iteration`` exists (None or -1: newest, like Inria).
    splatfacto/gsplat models (scene/model_sources.py) give their training step."""
    model_path = Path(model_path)
    from scene.model_sources import detect_model_source, resolve_model_source

    if detect_model_source(model_path):
        return resolve_model_source(model_path, iteration).iteration
    its = available_iterations(model_path)
    pc = model_path / "point_cloud"
    if not its:
        raise UserError(f"{pc}: no iteration_N/point_cloud.ply inside; train the model or pass the right -m")
    if iteration is None or iteration == -1:
        return its[-1]
    if iteration not in its:
        raise UserError(f"{pc}: no iteration {iteration}; available: {', '.join(map(str, its))} "
                        f"(pass --iteration one of them, or omit it for the newest)")
    return int(iteration)


def model_inputs(model_path: str | Path, source_path: str = "") -> list[Path]:
    """The folders a job on this model reads, for the output-folder rule (utils.outputs): the model's
    point_cloud/ and the scene folder (``source_path``, else the one cfg_args names, when readable)."""
    model_path = Path(model_path)
    source = source_path
    if not source and (model_path / "cfg_args").is_file():
        try:
            source = str(read_cfg_args(model_path / "cfg_args").get("source_path") or "")
        except UserError:
            source = ""   # load_model reports it
    return [model_path / "point_cloud"] + ([Path(source)] if source else [])


def ply_path(model_path: str | Path, iteration: int) -> Path:
    return Path(model_path) / "point_cloud" / f"iteration_{int(iteration)}" / "point_cloud.ply"


def load_model(model_path: str | Path, iteration: Optional[int] = None,
               device: torch.device | str = "cpu") -> tuple[ModelParams, GaussianModel, int]:
    """Read a model folder: (ModelParams from cfg_args, the Gaussians, the iteration loaded).

    ``model_path`` in the returned params is the folder actually read (it may have moved since training);
    the SH degree is the PLY's. Without cfg_args the PLY still loads, with default params and a warning.
    splatfacto/gsplat models (a run folder, PLY or checkpoint) are read by scene/model_sources.py; their
    params carry how to move the data's cameras into the model's frame (segmentation/views.py applies it).
    """
    model_path = Path(model_path)
    from scene.model_sources import MODEL_FRAME_FILE, detect_model_source, load_foreign_model, with_stored_frame

    if detect_model_source(model_path):
        return load_foreign_model(model_path, iteration, device)
    it = find_iteration(model_path, iteration)
    cfg_file = model_path / "cfg_args"
    if cfg_file.is_file():
        try:
            params = model_params_from_cfg(read_cfg_args(cfg_file))
        except TypeError as e:  # a literal of the wrong kind where a field expects another
            raise UserError(f"{cfg_file}: unexpected values ({e}); re-create it or delete it") from None
    else:
        warnings.warn(f"{cfg_file}: missing; using default ModelParams (pass -s SOURCE if a script needs the "
                      f"source images)", stacklevel=2)
        params = ModelParams()
    gaussians = GaussianModel(params.sh_degree if 0 <= params.sh_degree <= 3 else 3, device=device)
    gaussians.load_ply(ply_path(model_path, it))
    if cfg_file.is_file() and params.sh_degree != gaussians.max_sh_degree:
        warnings.warn(f"{cfg_file}: sh_degree={params.sh_degree} but the PLY has degree "
                      f"{gaussians.max_sh_degree}; using the PLY's", stacklevel=2)
    params.sh_degree = gaussians.max_sh_degree
    params.model_path = str(model_path)
    if (model_path / MODEL_FRAME_FILE).is_file():
        params = with_stored_frame(params, model_path)
    return params, gaussians, it


def save_model(model_path: str | Path, iteration: int, gaussians: GaussianModel) -> Path:
    """Write point_cloud/iteration_N/point_cloud.ply (atomically); returns its path."""
    path = ply_path(model_path, iteration)
    gaussians.save_ply(path)
    return path


def camera_to_json(index: int, cam: Camera) -> dict:
    """One cameras.json entry in Inria's layout (c2w rotation, camera centre)."""
    w2c = np.asarray(cam.world_to_camera, dtype=np.float64)
    c2w = np.linalg.inv(w2c)
    entry = {
        "id": int(index),
        "img_name": cam.image_name,
        "width": int(cam.width),
        "height": int(cam.height),
        "position": c2w[:3, 3].tolist(),
        "rotation": [row.tolist() for row in c2w[:3, :3]],
        "fy": float(cam.fy),
        "fx": float(cam.fx),
    }
    if not (math.isclose(cam.cx, cam.width / 2, abs_tol=1e-9) and math.isclose(cam.cy, cam.height / 2,
                                                                                abs_tol=1e-9)):
        entry["cx"], entry["cy"] = float(cam.cx), float(cam.cy)
    if cam.znear != 0.2:  # a camera moved into a splatfacto/gsplat model's frame (scene/frames.py)
        entry["znear"] = float(cam.znear)
    return entry


def write_cameras_json(path: str | Path, cameras: Sequence[Camera]) -> None:
    """Inria's cameras.json (``id`` is the camera's uid), written atomically."""
    atomic_write_text(path, json.dumps([camera_to_json(c.uid, c) for c in cameras]))


def read_cameras_json(path: str | Path) -> list[Camera]:
    """Cameras from Inria's cameras.json (no images attached; principal point at the centre unless the
    entry carries ``cx``/``cy``)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: not found; pass a model folder written by train.py (it contains cameras.json)")
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({str(e).splitlines()[0]}); re-create it with train.py") from None
    if not isinstance(entries, list):
        raise UserError(f"{path}: expected a JSON list of cameras; re-create it with train.py")
    cams = []
    for i, e in enumerate(entries):
        try:
            rot = np.asarray(e["rotation"], dtype=np.float64)
            pos = np.asarray(e["position"], dtype=np.float64)
            width, height = int(e["width"]), int(e["height"])
            fx, fy = float(e["fx"]), float(e["fy"])
            cx = float(e.get("cx", width / 2))
            cy = float(e.get("cy", height / 2))
            znear = float(e.get("znear", 0.2))
            uid, name = int(e["id"]), str(e["img_name"])
        except (KeyError, TypeError, ValueError) as err:
            raise UserError(f"{path}: camera entry {i} is malformed ({type(err).__name__}: {err}); "
                            f"each needs id, img_name, width, height, position, rotation, fx, fy") from None
        if rot.shape != (3, 3) or pos.shape != (3,) or not (np.isfinite(rot).all() and np.isfinite(pos).all()):
            raise UserError(f"{path}: camera entry {i} needs a finite 3x3 rotation and a 3-vector position")
        w2c = np.eye(4)
        w2c[:3, :3] = rot.T
        w2c[:3, 3] = -rot.T @ pos
        cams.append(Camera(uid=uid, image_name=name, width=width, height=height, fx=fx, fy=fy, cx=cx, cy=cy,
                           world_to_camera=w2c, znear=znear))
    return cams
