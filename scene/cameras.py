"""Pinhole cameras in one convention, whatever the dataset format.

Convention (also in the README): world-to-camera extrinsics in OpenCV/COLMAP axes (x right, y down,
z forward); intrinsics fx, fy, cx, cy in pixels with COLMAP's pixel-centre convention (the centre of the
top-left pixel is (0.5, 0.5)). The rasterizer evaluates pixel (i, j) at (i + 0.5, j + 0.5) in that frame,
which is exactly Inria's ``ndc2Pix`` for a centred principal point.

Images are never all held in memory: a camera knows how to load and prepare its image, and
:class:`ImageCache` keeps decoded images up to a byte budget.
"""
from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class Distortion:
    """A COLMAP distortion to undo (OpenCV model). Coefficients are resolution-independent.

    ``coeffs`` follows OpenCV's order (k1, k2, p1, p2[, k3]). Images and masks of a distorted camera are
    undistorted with the same maps, only the interpolation differs (linear vs nearest).
    """

    model: str                 # COLMAP model name, e.g. "SIMPLE_RADIAL"
    coeffs: tuple[float, ...]  # OpenCV distCoeffs


@dataclass
class Camera:
    """One view. ``image_name`` is the image file stem, the key masks are matched by."""

    uid: int
    image_name: str
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    world_to_camera: np.ndarray  # [4, 4] float64, OpenCV axes
    image_path: Optional[str] = None
    distortion: Optional[Distortion] = None
    # Alpha compositing of RGBA images (NeRF-synthetic): background colour in [0, 1], RGB.
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)
    # Optional custom loader returning HxWx{3,4} uint8/float at any size (tests, generated scenes).
    loader: Optional[Callable[[], np.ndarray]] = field(default=None, repr=False, compare=False)
    # Near-plane depth in world units (Inria's 0.2). A camera moved into a scaled frame (scene/frames.py)
    # scales it too, so it renders the same picture there.
    znear: float = 0.2

    # ----- geometry -------------------------------------------------------------------------------
    @property
    def R(self) -> np.ndarray:  # [3, 3] world-to-camera rotation
        return self.world_to_camera[:3, :3]

    @property
    def T(self) -> np.ndarray:  # [3] world-to-camera translation
        return self.world_to_camera[:3, 3]

    @property
    def camera_center(self) -> np.ndarray:  # [3] in world coordinates
        return -self.R.T @ self.T

    @property
    def FoVx(self) -> float:
        return 2.0 * math.atan(self.width / (2.0 * self.fx))

    @property
    def FoVy(self) -> float:
        return 2.0 * math.atan(self.height / (2.0 * self.fy))

    def viewmat(self, device: torch.device | str = "cpu") -> Tensor:  # [4, 4] float32 world-to-camera
        return torch.as_tensor(self.world_to_camera, dtype=torch.float32, device=device)

    def K(self, device: torch.device | str = "cpu") -> Tensor:  # [3, 3] float32
        return torch.tensor([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]],
                            dtype=torch.float32, device=device)

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Project world points [N, 3] → (pixel coordinates [N, 2] in COLMAP convention, depth [N])."""
        pc = points @ self.R.T + self.T
        z = pc[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = np.stack([self.fx * pc[:, 0] / z + self.cx, self.fy * pc[:, 1] / z + self.cy], axis=1)
        return uv, z

    def scaled(self, width: int, height: int) -> "Camera":
        """The same camera at another resolution (intrinsics scaled per axis)."""
        sx, sy = width / self.width, height / self.height
        return Camera(self.uid, self.image_name, width, height, self.fx * sx, self.fy * sy, self.cx * sx,
                      self.cy * sy, self.world_to_camera.copy(), self.image_path, self.distortion,
                      self.background, self.loader, self.znear)

    # ----- pixels ---------------------------------------------------------------------------------
    def read_raw(self) -> np.ndarray:
        """The stored image as HxWxC uint8 (C = 3 or 4), unprocessed."""
        if self.loader is not None:
            return self.loader()
        if self.image_path is None:
            raise ValueError(f"camera {self.image_name} has no image")
        from utils.image_io import read_image

        return read_image(self.image_path)

    def prepare_image(self, raw: np.ndarray) -> np.ndarray:
        """HxWx{3,4} uint8 at any size → [height, width, 3] float32 in [0, 1]: resized (area),
        undistorted (linear), RGBA composited on ``background``."""
        from utils.image_io import prepare_pixels

        return prepare_pixels(raw, self, is_mask=False)

    def prepare_mask(self, mask: np.ndarray) -> np.ndarray:
        """A mask (HxW integer or bool) at any size → [height, width] of the same dtype, resized with
        nearest neighbour and undistorted with the same maps as the image (nearest)."""
        from utils.image_io import prepare_pixels

        return prepare_pixels(mask, self, is_mask=True)

    def load_image(self, cache: Optional["ImageCache"] = None, device: torch.device | str = "cpu") -> Tensor:
        """[3, height, width] float32 in [0, 1] on ``device``."""
        arr = cache.get(self) if cache is not None else self.prepare_image(self.read_raw())
        return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).to(device)


class ImageCache:
    """Prepared images kept up to ``budget_bytes`` (least recently used evicted). Thread-safe."""

    def __init__(self, budget_bytes: int):
        self.budget = int(budget_bytes)
        self._items: "OrderedDict[tuple[int, str], np.ndarray]" = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        return self._bytes

    def get(self, cam: Camera) -> np.ndarray:  # [H, W, 3] float32
        key = (cam.uid, cam.image_name)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        arr = cam.prepare_image(cam.read_raw())
        with self._lock:
            if arr.nbytes <= self.budget:
                self._items[key] = arr
                self._bytes += arr.nbytes
                while self._bytes > self.budget:
                    _, old = self._items.popitem(last=False)
                    self._bytes -= old.nbytes
        return arr
