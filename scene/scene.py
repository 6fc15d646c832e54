"""Inria's ``Scene``: a source folder, a Gaussian model and the model folder they are written to.

Creating a Scene for training writes Inria's files into ``model_path`` (``input.ply``: the initial points,
``cameras.json``: test then train cameras, as Inria lists them) and initialises the Gaussians from the
dataset's points, or, when the dataset has none (NeRF-synthetic, LLFF without ``sparse/``), from points
triangulated from the views or random points inside ``SceneInfo.bounds``. Creating it with
``load_iteration`` reads a trained ``point_cloud/iteration_N/point_cloud.ply`` instead and writes nothing.

Unlike Inria the camera lists are not shuffled: the trainer draws its view order from seeded generators, so
a run (and a resumed run) is reproducible.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import numpy as np

from arguments import ModelParams
from scene.cameras import Camera, ImageCache
from scene.dataset_readers import read_scene
from scene.gaussian_model import GaussianModel, random_point_cloud
from scene.model_folder import find_iteration, ply_path, save_model, write_cameras_json
from scene.types import BasicPointCloud, SceneInfo
from utils.errors import UserError
from utils.ply import write_point_cloud_ply

log = logging.getLogger(__name__)

RANDOM_INIT_MODES = ("uniform", "images", "triangulate")
# Fewer triangulated points than this fall back to random points coloured from the images.
MIN_TRIANGULATED_POINTS = 1000


def check_model_path(model_path: str | Path) -> Path:
    """``model_path`` as a folder that exists or can be created; a file in the way is a UserError."""
    path = Path(model_path)
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                raise UserError(f"{p}: exists and is not a folder; pass -m/--model_path a folder path")
            break
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{path}: cannot create the model folder ({e.strerror}); pass a writable -m") from None
    return path


def photo_statistics(points: np.ndarray, cameras: list[Camera], cache: Optional[ImageCache] = None,
                     max_views: int = 32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Colour mean and variance of each point over the views it projects into (no occlusion test).

    Up to ``max_views`` evenly spaced views are used.
    points: np.ndarray  # [P, 3]
    returns (mean [P, 3] float32 in [0, 1], variance [P] float32 summed over RGB, views [P] int: count)
    """
    pts = np.asarray(points, dtype=np.float64)
    s1 = np.zeros((len(pts), 3))
    s2 = np.zeros((len(pts), 3))
    count = np.zeros(len(pts), dtype=np.int64)
    step = max(1, len(cameras) // max_views)
    for cam in cameras[::step][:max_views]:
        img = cache.get(cam) if cache is not None else cam.prepare_image(cam.read_raw())  # [H, W, 3]
        uv, z = cam.project(pts)
        with np.errstate(invalid="ignore"):
            col = np.floor(uv[:, 0])
            row = np.floor(uv[:, 1])
            ok = (z > 0) & (col >= 0) & (col < cam.width) & (row >= 0) & (row < cam.height)
        v = img[row[ok].astype(np.int64), col[ok].astype(np.int64)].astype(np.float64)
        s1[ok] += v
        s2[ok] += v * v
        count[ok] += 1
    n = np.maximum(count, 1)[:, None]
    mean = s1 / n
    var = np.clip(s2 / n - mean * mean, 0.0, None).sum(axis=1)
    return mean.astype(np.float32), var.astype(np.float32), count


def image_colored_point_cloud(bounds: np.ndarray, n: int, cameras: list[Camera],
                              cache: Optional[ImageCache] = None, seed: int = 0) -> BasicPointCloud:
    """Inria's uniform random points, coloured with the mean colour of the views each one projects into.

    Inria's near-grey start costs hundreds of iterations before colours (feature LR 0.0025 per step on
    the SH DC) reach a bright background; short CPU schedules cannot afford them. Points no view sees keep
    their grey. On maryRose 128 px this gives +0.4-0.6 dB held-out PSNR after 1000 iterations. (Keeping only
    the most photo-consistent of 8x as many candidates concentrated points on the object, 8x more often
    inside its visual hull, but ended 0.2-0.6 dB lower: the table and background lost their points.)

    bounds: np.ndarray  # [2, 3]
    """
    pcd = random_point_cloud(bounds, n, seed)
    mean, _, count = photo_statistics(pcd.points, cameras, cache)
    seen = count > 0
    pcd.colors[seen] = mean[seen]
    return pcd


class Scene:
    """Cameras of both splits, the scene extent and the Gaussians, tied to one model folder."""

    def __init__(self, args: ModelParams, gaussians: GaussianModel, load_iteration: Optional[int] = None,
                 random_init_points: int = 100_000, seed: int = 0, scene_info: Optional[SceneInfo] = None,
                 random_init: str = "uniform", image_cache: Optional[ImageCache] = None,
                 progress: bool = False):
        """``load_iteration``: None trains from scratch; -1 loads the newest saved iteration; N loads N.

        ``random_init`` for scenes without points: "uniform" (Inria: uniform in the bounds, near-grey),
        "images" (the same points coloured from the photos, see :func:`image_colored_point_cloud`) or
        "triangulate" (SIFT tracks triangulated with the known poses, :mod:`scene.triangulate`; not random,
        so ``self.random_init`` stays False). ``args.object_masks`` turns every view into its masked RGBA
        (:mod:`scene.object_masks`). ``scene_info`` skips reading the source (tests, generated scenes).
        ``progress``: progress bars for the triangulation.
        """
        if random_init not in RANDOM_INIT_MODES:
            raise UserError(f"--random_init {random_init!r}: use one of {', '.join(RANDOM_INIT_MODES)}")
        self.model_path = Path(args.model_path)
        self.gaussians = gaussians
        self.loaded_iter: Optional[int] = None
        if load_iteration is not None:
            self.loaded_iter = find_iteration(self.model_path, load_iteration)
        if scene_info is None:
            scene_info = read_scene(args.source_path, args.images, args.resolution, args.eval,
                                    args.white_background)
        if getattr(args, "object_masks", ""):
            from scene.object_masks import apply_object_masks

            scene_info = apply_object_masks(scene_info, args.object_masks)
        self.scene_info = scene_info
        if not scene_info.train_cameras:
            raise UserError(f"{args.source_path}: no training views; check -s and --eval")
        self.train_cameras: list[Camera] = list(scene_info.train_cameras)
        self.test_cameras: list[Camera] = list(scene_info.test_cameras)
        self.cameras_extent = float(scene_info.nerf_normalization["radius"])
        self.initial_points: Optional[BasicPointCloud] = None
        self.random_init = False  # True when the dataset had no points and random ones were drawn

        if self.loaded_iter is not None:
            self.gaussians.load_ply(ply_path(self.model_path, self.loaded_iter))
            return
        check_model_path(self.model_path)
        pcd = scene_info.point_cloud
        if pcd is None or len(pcd.points) == 0:
            if random_init == "triangulate":
                from scene.triangulate import triangulate_points

                log.info("%s: no points in the dataset; triangulating SIFT matches between the training views",
                         args.source_path)
                pcd = triangulate_points(self.train_cameras, image_cache, progress=progress)
                if len(pcd.points) < MIN_TRIANGULATED_POINTS:
                    log.warning("%s: only %d points triangulated (too few views, texture or pose accuracy); "
                                "using %d random points coloured from the images instead",
                                args.source_path, len(pcd.points), random_init_points)
                    random_init = "images"
            if random_init != "triangulate":
                if random_init_points <= 0:
                    raise UserError(f"{args.source_path}: the scene has no points; pass --random_init_points > 0")
                self.random_init = True
                log.info("%s: no points in the dataset; initialising %d random points (%s) in the scene bounds",
                         args.source_path, random_init_points, random_init)
                if random_init == "images":
                    pcd = image_colored_point_cloud(scene_info.bounds, random_init_points, self.train_cameras,
                                                    image_cache, seed)
                else:
                    pcd = random_point_cloud(scene_info.bounds, random_init_points, seed)
        self.initial_points = pcd
        write_point_cloud_ply(self.model_path / "input.ply", pcd.points, pcd.colors)
        write_cameras_json(self.model_path / "cameras.json", self.test_cameras + self.train_cameras)
        self.gaussians.create_from_pcd(pcd, self.cameras_extent)

    # Inria's names kept as methods so ported scripts keep working.
    def getTrainCameras(self) -> list[Camera]:  # noqa: N802 (Inria's name)
        return self.train_cameras

    def getTestCameras(self) -> list[Camera]:  # noqa: N802 (Inria's name)
        return self.test_cameras

    def save(self, iteration: int) -> Path:
        """Write point_cloud/iteration_N/point_cloud.ply; returns its path."""
        return save_model(self.model_path, iteration, self.gaussians)

    def image_cache(self, budget_mb: int) -> ImageCache:
        """A cache for this scene's decoded images, ``budget_mb`` megabytes."""
        return ImageCache(int(budget_mb) * 1024 * 1024)
