"""Plain containers passed between the dataset readers, the Gaussian model and the scripts."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from scene.cameras import Camera
from utils.ply import BasicPointCloud  # noqa: F401 - defined beside its PLY reader (utils/ sits below scene/)


@dataclass
class SceneInfo:
    """Everything a reader knows about a source folder, format-independent."""

    scene_type: str                      # "colmap" | "llff" | "blender"
    source_path: str
    train_cameras: list[Camera]
    test_cameras: list[Camera]
    point_cloud: Optional[BasicPointCloud]  # None when the dataset has no points (LLFF without sparse/, blender)
    nerf_normalization: dict             # {"translate": np.ndarray [3], "radius": float}, Inria's getNerfppNorm
    bounds: np.ndarray                   # [2, 3] min / max corner of the region the scene lives in (random init)
    extra: dict = field(default_factory=dict)
