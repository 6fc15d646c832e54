"""Where things are on screen and in the photo: camera poses, the photo plane, screen rays (pure numpy).

Conventions: cameras are OpenCV (x right, y down, z forward), as in scene/cameras.py and in viser. A view's
photo is drawn on a rectangle at ``depth`` in front of its camera that covers exactly the view's image
(principal point included), so looking through the camera the photo lies on the rendered scene. A click is
a world ray; where it meets that rectangle gives the view's continuous pixel (pixel i spans [i, i + 1)),
scaled to the image FILE's pixels, the frame ``segment.py --prompt VIEW:X,Y`` takes. The file is what is
shown: for a distorted camera (its training image is undistorted) the photo is the file itself, so the
coordinates stay the file's and the drawn photo is off the 3D scene by the distortion.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
from scipy.spatial.transform import Rotation

# The photo rectangle's own frame, in the camera's: viser's image plane has its top along local +y and faces
# +z; the camera's image has its top along -y and is seen from -z: a half turn about x.
_PHOTO_IN_CAMERA = np.diag([1.0, -1.0, -1.0])


def wxyz_of(rotation: np.ndarray) -> np.ndarray:  # [4] (w, x, y, z), w >= 0
    """Unit quaternion of a rotation matrix. rotation: [3, 3]."""
    x, y, z, w = Rotation.from_matrix(np.asarray(rotation, dtype=np.float64)).as_quat()
    q = np.array([w, x, y, z])
    return q if w >= 0 else -q


def rotation_of(wxyz: Sequence[float]) -> np.ndarray:  # [3, 3]
    w, x, y, z = (float(v) for v in wxyz)
    return Rotation.from_quat([x, y, z, w]).as_matrix()


def camera_pose(camera: Any) -> tuple[np.ndarray, np.ndarray]:
    """(wxyz, position) of a camera in the world: camera-to-world rotation and the camera centre."""
    R = np.asarray(camera.R, dtype=np.float64)
    return wxyz_of(R.T), np.asarray(camera.camera_center, dtype=np.float64)


def scene_up(cameras: Sequence[Any]) -> np.ndarray:  # [3] unit
    """The cameras' mean up direction (-y of each camera, in the world): the up of the viewer's orbit."""
    ups = np.stack([-np.asarray(c.R, dtype=np.float64)[1] for c in cameras])
    up = ups.mean(axis=0)
    n = np.linalg.norm(up)
    return up / n if n > 1e-9 else np.array([0.0, 0.0, 1.0])


def camera_spacing(cameras: Sequence[Any]) -> float:
    """A length on the scale of the camera layout: the median distance from a camera to its nearest other
    camera (frustum and photo sizes); 1.0 for a single camera."""
    if len(cameras) < 2:
        return 1.0
    c = np.stack([np.asarray(cam.camera_center, dtype=np.float64) for cam in cameras])
    d = np.linalg.norm(c[:, None] - c[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    spacing = float(np.median(d.min(axis=1)))
    return spacing if spacing > 1e-9 else 1.0


@dataclass(frozen=True)
class PhotoPlane:
    """A view's photo as drawn in 3D, and the map between that rectangle and the image file's pixels."""

    rotation: np.ndarray        # [3, 3] camera-to-world
    centre: np.ndarray          # [3] camera centre (world)
    width: int                  # the view's pixels (the camera model)
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    file_size: tuple[int, int]  # (width, height) of the image file
    depth: float                # distance of the rectangle from the camera along its axis

    @classmethod
    def of(cls, camera: Any, file_size: tuple[int, int], depth: float) -> "PhotoPlane":
        R = np.asarray(camera.R, dtype=np.float64)
        return cls(R.T.copy(), np.asarray(camera.camera_center, dtype=np.float64), int(camera.width),
                   int(camera.height), float(camera.fx), float(camera.fy), float(camera.cx), float(camera.cy),
                   (int(file_size[0]), int(file_size[1])), float(depth))

    # --- the rectangle in 3D (what viser's add_image takes) ---
    @property
    def render_size(self) -> tuple[float, float]:
        """(width, height) of the rectangle in world units."""
        return self.width / self.fx * self.depth, self.height / self.fy * self.depth

    def pose(self) -> tuple[np.ndarray, np.ndarray]:
        """(wxyz, position) of the rectangle's centre in the world."""
        local = np.array([(self.width / 2 - self.cx) / self.fx, (self.height / 2 - self.cy) / self.fy, 1.0])
        return wxyz_of(self.rotation @ _PHOTO_IN_CAMERA), self.centre + self.rotation @ (local * self.depth)

    # --- file pixels <-> world ---
    def file_pixel(self, origin: Sequence[float], direction: Sequence[float]) -> Optional[tuple[float, float]]:
        """Continuous image-file coordinates where the ray meets the photo, or None when it misses it (behind
        the camera, parallel, or outside the photo)."""
        o = self.rotation.T @ (np.asarray(origin, dtype=np.float64) - self.centre)   # camera frame
        d = self.rotation.T @ np.asarray(direction, dtype=np.float64)
        if abs(d[2]) < 1e-12:
            return None
        t = (self.depth - o[2]) / d[2]
        if t <= 0:
            return None
        p = o + t * d
        u = self.fx * p[0] / p[2] + self.cx
        v = self.fy * p[1] / p[2] + self.cy
        if not (0.0 <= u < self.width and 0.0 <= v < self.height):
            return None
        return u * self.file_size[0] / self.width, v * self.file_size[1] / self.height

    def world_point(self, x: float, y: float) -> np.ndarray:  # [3]
        """The world point of continuous file coordinates (x, y) on the photo."""
        u = x * self.width / self.file_size[0]
        v = y * self.height / self.file_size[1]
        local = np.array([(u - self.cx) / self.fx, (v - self.cy) / self.fy, 1.0]) * self.depth
        return self.centre + self.rotation @ local


def file_pixel_index(x: float, y: float, file_size: tuple[int, int]) -> tuple[int, int]:
    """The pixel (column, row) containing continuous file coordinates, clamped into the image."""
    w, h = file_size
    return min(w - 1, max(0, int(math.floor(x)))), min(h - 1, max(0, int(math.floor(y))))


# --- the browser's camera (viser: OpenCV axes, vertical fov, aspect = canvas width / height) ---
def screen_ray(screen: Sequence[float], position: Sequence[float], wxyz: Sequence[float], fov: float,
               aspect: float) -> tuple[np.ndarray, np.ndarray]:
    """World ray (origin, unit direction) through a canvas point given in [0, 1]^2 (0, 0 = top-left), the
    coordinates viser reports clicks and box selections in."""
    t = math.tan(fov / 2)
    u, v = float(screen[0]), float(screen[1])
    d = rotation_of(wxyz) @ np.array([(2 * u - 1) * t * aspect, (2 * v - 1) * t, 1.0])
    return np.asarray(position, dtype=np.float64), d / np.linalg.norm(d)


def screen_point(point: Sequence[float], position: Sequence[float], wxyz: Sequence[float], fov: float,
                 aspect: float) -> Optional[tuple[float, float]]:
    """Canvas coordinates in [0, 1]^2 of a world point (None behind the camera): the inverse of screen_ray."""
    p = rotation_of(wxyz).T @ (np.asarray(point, dtype=np.float64) - np.asarray(position, dtype=np.float64))
    if p[2] <= 0:
        return None
    t = math.tan(fov / 2)
    return (p[0] / p[2] / (t * aspect) + 1) / 2, (p[1] / p[2] / t + 1) / 2
