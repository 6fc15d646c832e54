"""The views a job runs on (segmentation, its evaluation, pruning, features, affordance, render.py): from the
source folder, else from cameras.json.

Inria's tools read cameras from the source folder named in the model's ``cfg_args``. Most jobs need only the
camera geometry (masks bring the pixels), so a model copied without its source still works: the cameras then
come from ``<model>/cameras.json`` and previews show renders instead of the photos. cameras.json carries no
split; ``cameras_json`` says what to do about it: ``"by_name"`` splits it like the source would be split
(NeRF-synthetic name prefixes, else Inria's every-8th rule when the model used --eval), ``"all"`` counts every
camera as a view of the split (pruning: more views can only keep more Gaussians; the caller says so).
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

from arguments import ModelParams
from scene.cameras import Camera
from utils.errors import UserError

SPLITS = ("train", "test", "all")
LLFF_HOLD = 8
CamerasJsonPolicy = Literal["by_name", "all"]


@dataclass
class Views:
    """Cameras of one split and where they came from."""

    cameras: list[Camera]
    split: str
    source_path: Optional[str]   # the scene folder read, None when cameras.json was used
    cameras_from: str            # "source" | "cameras.json"
    has_images: bool             # whether Camera.load_image can show the photos
    other_names: list[str] = field(default_factory=list)  # image names of the scene's views outside this split
    model_frame: Optional[dict] = None  # splatfacto/gsplat: how the cameras were moved into the model's frame
    mask_dir: Optional[str] = None      # per-view masks named by the scene (nerfstudio mask_path), if any
    test_cameras: list[Camera] = field(default_factory=list)  # the read's hold-out (source, --eval), else []
    all_cameras: list[Camera] = field(default_factory=list)   # every view of the scene, both splits


def _other_names(every: list[Camera], chosen: list[Camera]) -> list[str]:
    """Image names of the scene's views that are not in ``chosen`` (masks for them are not "unmatched")."""
    mine = {c.image_name for c in chosen}
    return [c.image_name for c in every if c.image_name not in mine]


def _split_by_name(cameras: list[Camera], split: str, eval_: bool) -> list[Camera]:
    """cameras.json carries no split: NeRF-synthetic names say it (``train/…``, ``test/…``), otherwise
    Inria's rule on sorted names (every 8th view is a test view) is applied when the model used --eval."""
    if split == "all":
        return cameras
    prefixed = [c for c in cameras if re.match(r"^(train|test|val)/", c.image_name)]
    if prefixed and len(prefixed) == len(cameras):
        want = ("test/", "val/") if split == "test" else ("train/",)
        return [c for c in cameras if c.image_name.startswith(want)]
    if split == "train" and not eval_:
        return cameras
    ordered = sorted(cameras, key=lambda c: c.image_name)
    keep = (lambda i: i % LLFF_HOLD == 0) if split == "test" else (lambda i: i % LLFF_HOLD != 0)
    return [c for i, c in enumerate(ordered) if keep(i)]


def load_views(params: ModelParams, split: str = "train", source_path: str = "", images: str = "",
               resolution: int = 0, cameras_json: CamerasJsonPolicy = "by_name") -> Views:
    """Cameras of ``split`` ("train": what train.py trained on; "test": the --eval hold-out, every 8th view
    or NeRF-synthetic's test json; "all").

    ``source_path``/``images``/``resolution`` override cfg_args (empty/0: keep). An explicit source that is
    missing is an error; a missing source from cfg_args falls back to cameras.json (``cameras_json``: the
    policy in the module docstring), with a warning in the ``"by_name"`` policy.
    """
    if split not in SPLITS:
        raise UserError(f"--split {split!r}: use one of {', '.join(SPLITS)}")
    from scene.dataset_readers import read_scene, target_resolution

    res = resolution if resolution else params.resolution
    explicit = bool(source_path)
    source = source_path or params.source_path
    model_path = Path(params.model_path)
    from scene.model_sources import align_scene, require_data

    require_data(params, source)
    if source and (explicit or Path(source).is_dir()):
        eval_flag = {"train": params.eval, "test": True, "all": False}[split]
        info = read_scene(source, images or params.images, res, eval_flag, params.white_background)
        info, frame = align_scene(params, info)  # splatfacto/gsplat: cameras into the model's frame
        cams = {"train": info.train_cameras, "test": info.test_cameras,
                "all": info.train_cameras + info.test_cameras}[split]
        if not cams:
            raise UserError(f"{source}: no {split} views (the {info.scene_type} scene has "
                            f"{len(info.train_cameras) + len(info.test_cameras)} views); pick another --split")
        every = info.train_cameras + info.test_cameras
        return Views(list(cams), split, str(source), "source", True, _other_names(every, cams), frame,
                     info.extra.get("mask_dir"), list(info.test_cameras), every)

    cam_file = model_path / "cameras.json"
    if not cam_file.is_file():
        where = f"source folder {source} (from cfg_args) not found" if source else "cfg_args names no source folder"
        raise UserError(f"{model_path}: {where} and no cameras.json; pass -s/--source_path with the scene folder")
    from scene.model_folder import read_cameras_json

    if source and cameras_json == "by_name":
        warnings.warn(f"{source}: source folder (from {model_path / 'cfg_args'}) not found; using the cameras in "
                      f"{cam_file} (previews show renders, not photos). Pass -s to use the images", stacklevel=2)
    every = read_cameras_json(cam_file)
    if not every:
        raise UserError(f"{cam_file}: no cameras; re-create the model folder with train.py")
    cams = _split_by_name(every, split, params.eval) if cameras_json == "by_name" else list(every)
    if not cams:
        raise UserError(f"{cam_file}: no {split} views; pick another --split")
    # cameras.json already holds the training resolution: only an explicit -r rescales it again.
    if resolution and resolution != -1:
        out = []
        for c in cams:
            size = target_resolution(c.width, c.height, resolution)
            out.append(c if size == (c.width, c.height) else c.scaled(*size))
        cams = out
    return Views(cams, split, None, "cameras.json", False, _other_names(every, cams), all_cameras=list(every))
