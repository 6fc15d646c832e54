"""COLMAP sparse model reader and writer (binary and text), numpy + struct only.

Why not pycolmap: it is a large native wheel and we only need the three model files. Formats follow
COLMAP's ``src/colmap/scene/reconstruction_io.cc``: little-endian binary, or whitespace-separated text with
``#`` comments. Rotations are world-to-camera quaternions (w, x, y, z), OpenCV camera axes.

Every malformed file raises :class:`utils.errors.UserError` naming the file, never a bare struct/Value error.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from utils.errors import UserError
from utils.io import atomic_write_bytes, atomic_write_text


@dataclass(frozen=True)
class CameraModel:
    model_id: int
    name: str
    num_params: int


# COLMAP's camera models, in id order (colmap/sensor/models.h).
CAMERA_MODELS: tuple[CameraModel, ...] = (
    CameraModel(0, "SIMPLE_PINHOLE", 3),
    CameraModel(1, "PINHOLE", 4),
    CameraModel(2, "SIMPLE_RADIAL", 4),
    CameraModel(3, "RADIAL", 5),
    CameraModel(4, "OPENCV", 8),
    CameraModel(5, "OPENCV_FISHEYE", 8),
    CameraModel(6, "FULL_OPENCV", 12),
    CameraModel(7, "FOV", 5),
    CameraModel(8, "SIMPLE_RADIAL_FISHEYE", 4),
    CameraModel(9, "RADIAL_FISHEYE", 5),
    CameraModel(10, "THIN_PRISM_FISHEYE", 12),
    CameraModel(11, "RAD_TAN_THIN_PRISM_FISHEYE", 16),
)
CAMERA_MODEL_IDS: dict[int, CameraModel] = {m.model_id: m for m in CAMERA_MODELS}
CAMERA_MODEL_NAMES: dict[str, CameraModel] = {m.name: m for m in CAMERA_MODELS}

_FIX_BIN = "re-export the model (e.g. `colmap model_converter --output_type BIN`) or re-run the reconstruction"
_FIX_TXT = "fix the line or re-export the model with `colmap model_converter --output_type TXT`"


@dataclass
class ColmapCamera:
    id: int
    model: str          # COLMAP model name, e.g. "PINHOLE"
    width: int
    height: int
    params: np.ndarray  # [num_params] float64, COLMAP's order (f/fx, fy, cx, cy, distortion...)


@dataclass
class ColmapImage:
    id: int
    qvec: np.ndarray    # [4] float64 world-to-camera rotation (w, x, y, z)
    tvec: np.ndarray    # [3] float64 world-to-camera translation
    camera_id: int
    name: str           # path relative to the image folder, as registered
    xys: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))              # [K, 2] float64 keypoints
    point3D_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # [K] int64, -1 = none

    def rotation(self) -> np.ndarray:  # [3, 3] world-to-camera
        return qvec_to_rotmat(self.qvec)

    def world_to_camera(self) -> np.ndarray:  # [4, 4] float64
        m = np.eye(4)
        m[:3, :3] = self.rotation()
        m[:3, 3] = self.tvec
        return m


@dataclass
class ColmapPoints:
    """points3D as arrays; tracks in CSR form (``track_offsets[i]:track_offsets[i+1]``)."""

    ids: np.ndarray            # [P] int64
    xyz: np.ndarray            # [P, 3] float64
    rgb: np.ndarray            # [P, 3] uint8
    errors: np.ndarray         # [P] float64 mean reprojection error (px)
    track_offsets: np.ndarray  # [P + 1] int64
    track_image_ids: np.ndarray    # [T] int32
    track_point2D_idxs: np.ndarray  # [T] int32

    def __len__(self) -> int:
        return int(self.ids.shape[0])


# ----- rotations ---------------------------------------------------------------------------------------
def qvec_to_rotmat(qvec: np.ndarray) -> np.ndarray:
    """(w, x, y, z) → [3, 3]; normalises first (COLMAP stores unit quaternions, text files round them)."""
    w, x, y, z = np.asarray(qvec, dtype=np.float64) / np.linalg.norm(qvec)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def rotmat_to_qvec(R: np.ndarray) -> np.ndarray:
    """[3, 3] rotation → (w, x, y, z) with w >= 0 (eigenvector method, robust near 180°)."""
    Rxx, Ryx, Rzx, Rxy, Ryy, Rzy, Rxz, Ryz, Rzz = np.asarray(R, dtype=np.float64).flat
    K = np.array([
        [Rxx - Ryy - Rzz, 0, 0, 0],
        [Ryx + Rxy, Ryy - Rxx - Rzz, 0, 0],
        [Rzx + Rxz, Rzy + Ryz, Rzz - Rxx - Ryy, 0],
        [Ryz - Rzy, Rzx - Rxz, Rxy - Ryx, Rxx + Ryy + Rzz],
    ]) / 3.0
    vals, vecs = np.linalg.eigh(K)
    q = vecs[[3, 0, 1, 2], np.argmax(vals)]
    return -q if q[0] < 0 else q


# ----- binary reading ----------------------------------------------------------------------------------
class _Reader:
    """Sequential little-endian reader over a whole file; every overrun becomes a UserError."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.buf = path.read_bytes()
        except OSError as e:
            raise UserError(f"{path}: cannot read ({e.strerror}); check the path and permissions") from None
        self.off = 0

    def corrupt(self, what: str) -> UserError:
        return UserError(f"{self.path}: truncated or corrupt COLMAP binary file ({what} at byte {self.off}); "
                         f"{_FIX_BIN}")

    def unpack(self, fmt: str) -> tuple:
        size = struct.calcsize(fmt)
        if self.off + size > len(self.buf):
            raise self.corrupt(f"needs {size} more bytes, file has {len(self.buf) - self.off}")
        out = struct.unpack_from(fmt, self.buf, self.off)
        self.off += size
        return out

    def count(self, min_record: int, what: str) -> int:
        """A uint64 element count, checked against the bytes left so garbage never allocates huge arrays."""
        (n,) = self.unpack("<Q")
        if n * min_record > len(self.buf) - self.off:
            raise self.corrupt(f"{what} count {n} does not fit in the remaining {len(self.buf) - self.off} bytes")
        return int(n)

    def array(self, dtype: np.dtype, n: int) -> np.ndarray:
        size = np.dtype(dtype).itemsize * n
        if self.off + size > len(self.buf):
            raise self.corrupt(f"array of {n} items needs {size} bytes, file has {len(self.buf) - self.off}")
        out = np.frombuffer(self.buf, dtype=dtype, count=n, offset=self.off).copy()
        self.off += size
        return out

    def cstring(self) -> str:
        end = self.buf.find(b"\x00", self.off)
        if end < 0:
            raise self.corrupt("unterminated image name")
        raw = self.buf[self.off:end]
        self.off = end + 1
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.corrupt("image name is not UTF-8") from None

    def finish(self) -> None:
        if self.off != len(self.buf):
            raise self.corrupt(f"{len(self.buf) - self.off} unexpected trailing bytes")


def read_cameras_binary(path: str | Path) -> dict[int, ColmapCamera]:
    r = _Reader(Path(path))
    n = r.count(24, "camera")
    cameras: dict[int, ColmapCamera] = {}
    for _ in range(n):
        cam_id, model_id, width, height = r.unpack("<iiQQ")
        model = CAMERA_MODEL_IDS.get(model_id)
        if model is None:
            raise r.corrupt(f"unknown camera model id {model_id} for camera {cam_id}")
        params = np.array(r.unpack(f"<{model.num_params}d"), dtype=np.float64)
        cameras[cam_id] = ColmapCamera(cam_id, model.name, int(width), int(height), params)
    r.finish()
    return cameras


_POINT2D = np.dtype([("x", "<f8"), ("y", "<f8"), ("id", "<i8")])
_TRACK = np.dtype([("image_id", "<i4"), ("point2D_idx", "<i4")])


def read_images_binary(path: str | Path) -> dict[int, ColmapImage]:
    r = _Reader(Path(path))
    n = r.count(73, "image")
    images: dict[int, ColmapImage] = {}
    for _ in range(n):
        image_id, qw, qx, qy, qz, tx, ty, tz, cam_id = r.unpack("<i4d3di")
        name = r.cstring()
        k = r.count(_POINT2D.itemsize, "points2D")
        pts = r.array(_POINT2D, k)
        images[image_id] = ColmapImage(image_id, np.array([qw, qx, qy, qz]), np.array([tx, ty, tz]), cam_id, name,
                                       np.stack([pts["x"], pts["y"]], axis=1), pts["id"].astype(np.int64))
    r.finish()
    return images


def read_points3D_binary(path: str | Path) -> ColmapPoints:
    r = _Reader(Path(path))
    n = r.count(51, "point")
    ids = np.empty(n, np.int64)
    xyz = np.empty((n, 3), np.float64)
    rgb = np.empty((n, 3), np.uint8)
    errors = np.empty(n, np.float64)
    offsets = np.zeros(n + 1, np.int64)
    track_bytes: list[bytes] = []
    head = struct.Struct("<Q3d3BdQ")
    buf = r.buf
    for i in range(n):  # one struct call per point; track bytes are collected and decoded in one go
        if r.off + head.size > len(buf):
            raise r.corrupt(f"point {i} of {n} is cut off")
        pid, x, y, z, cr, cg, cb, err, tlen = head.unpack_from(buf, r.off)
        r.off += head.size
        ids[i] = pid
        xyz[i] = (x, y, z)
        rgb[i] = (cr, cg, cb)
        errors[i] = err
        offsets[i + 1] = offsets[i] + tlen
        end = r.off + tlen * _TRACK.itemsize
        if end > len(buf):
            raise r.corrupt(f"track of point {pid} ({tlen} entries) is cut off")
        track_bytes.append(buf[r.off:end])
        r.off = end
    r.finish()
    tracks = np.frombuffer(b"".join(track_bytes), dtype=_TRACK)
    return ColmapPoints(ids, xyz, rgb, errors, offsets, tracks["image_id"].copy(), tracks["point2D_idx"].copy())


# ----- text reading ------------------------------------------------------------------------------------
def _text_lines(path: Path) -> list[tuple[int, str]]:
    """(1-based line number, line) without comments; blank lines kept (images.txt needs them)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror}); check the path and permissions") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a UTF-8 text file; {_FIX_TXT}") from None
    return [(i + 1, line.strip()) for i, line in enumerate(text.splitlines()) if not line.lstrip().startswith("#")]


def read_cameras_text(path: str | Path) -> dict[int, ColmapCamera]:
    path = Path(path)
    cameras: dict[int, ColmapCamera] = {}
    for lineno, line in _text_lines(path):
        if not line:
            continue
        parts = line.split()
        try:
            model = CAMERA_MODEL_NAMES.get(parts[1])
            if model is None:
                raise UserError(f"{path}:{lineno}: unknown camera model '{parts[1]}'; {_FIX_TXT}")
            params = np.array([float(v) for v in parts[4:]], dtype=np.float64)
            if params.shape[0] != model.num_params:
                raise ValueError(f"{model.name} needs {model.num_params} parameters, got {params.shape[0]}")
            cam = ColmapCamera(int(parts[0]), model.name, int(parts[2]), int(parts[3]), params)
        except (ValueError, IndexError) as e:
            raise UserError(f"{path}:{lineno}: malformed camera line ({e}); {_FIX_TXT}") from None
        cameras[cam.id] = cam
    return cameras


def read_images_text(path: str | Path) -> dict[int, ColmapImage]:
    """Two lines per image: header, then keypoints ``X Y POINT3D_ID`` (that line may be empty)."""
    path = Path(path)
    lines = _text_lines(path)
    images: dict[int, ColmapImage] = {}
    i = 0
    while i < len(lines):
        lineno, line = lines[i]
        if not line:
            i += 1
            continue
        pts_line = lines[i + 1][1] if i + 1 < len(lines) else ""
        i += 2
        try:
            parts = line.split(maxsplit=9)
            if len(parts) != 10:
                raise ValueError(f"expected 10 fields, got {len(parts)}")
            vals = [float(v) for v in parts[1:8]]
            values = pts_line.split()
            if len(values) % 3:
                raise ValueError(f"keypoint line {lineno + 1} has {len(values)} values, not a multiple of 3")
            pts = np.array(values, dtype=np.float64).reshape(-1, 3)
            img = ColmapImage(int(parts[0]), np.array(vals[:4]), np.array(vals[4:7]), int(parts[8]), parts[9],
                              pts[:, :2].copy(), pts[:, 2].astype(np.int64))
        except ValueError as e:
            raise UserError(f"{path}:{lineno}: malformed image entry ({e}); {_FIX_TXT}") from None
        images[img.id] = img
    return images


def read_points3D_text(path: str | Path) -> ColmapPoints:
    path = Path(path)
    ids, xyz, rgb, errs, lens, tracks = [], [], [], [], [], []
    for lineno, line in _text_lines(path):
        if not line:
            continue
        parts = line.split()
        try:
            if len(parts) < 8 or (len(parts) - 8) % 2:
                raise ValueError(f"expected 8 + 2k fields, got {len(parts)}")
            ids.append(int(parts[0]))
            xyz.append([float(v) for v in parts[1:4]])
            rgb.append([int(v) for v in parts[4:7]])
            errs.append(float(parts[7]))
            tr = [int(v) for v in parts[8:]]
        except ValueError as e:
            raise UserError(f"{path}:{lineno}: malformed point line ({e}); {_FIX_TXT}") from None
        lens.append(len(tr) // 2)
        tracks.extend(tr)
    tr_arr = np.array(tracks, dtype=np.int64).reshape(-1, 2)
    return ColmapPoints(np.array(ids, np.int64), np.array(xyz, np.float64).reshape(-1, 3),
                        np.array(rgb, np.int64).reshape(-1, 3).clip(0, 255).astype(np.uint8),
                        np.array(errs, np.float64), np.concatenate([[0], np.cumsum(lens, dtype=np.int64)]),
                        tr_arr[:, 0].astype(np.int32), tr_arr[:, 1].astype(np.int32))


# ----- model folder ------------------------------------------------------------------------------------
def find_model_file(folder: str | Path, stem: str) -> Optional[Path]:
    """``folder/stem.bin`` if present, else ``folder/stem.txt``, else None (binary wins, like COLMAP)."""
    folder = Path(folder)
    for ext in (".bin", ".txt"):
        p = folder / f"{stem}{ext}"
        if p.is_file():
            return p
    return None


def _read(folder: str | Path, stem: str, readers: tuple) -> tuple:
    p = find_model_file(folder, stem)
    if p is None:
        raise UserError(f"{Path(folder) / stem}.bin: not found (nor {stem}.txt); point -s at a folder with a "
                        f"complete COLMAP model in sparse/0")
    return (readers[0] if p.suffix == ".bin" else readers[1])(p), p


def read_cameras(folder: str | Path) -> tuple[dict[int, ColmapCamera], Path]:
    """cameras.{bin,txt} of a model folder → (cameras by id, file read)."""
    return _read(folder, "cameras", (read_cameras_binary, read_cameras_text))


def read_images(folder: str | Path) -> tuple[dict[int, ColmapImage], Path]:
    """images.{bin,txt} of a model folder → (images by id, file read)."""
    return _read(folder, "images", (read_images_binary, read_images_text))


def read_points3D(folder: str | Path) -> tuple[ColmapPoints, Path]:
    """points3D.{bin,txt} of a model folder → (points, file read)."""
    return _read(folder, "points3D", (read_points3D_binary, read_points3D_text))


# ----- writing (conversions and tests) -----------------------------------------------------------------
def _fmt(v: float) -> str:
    return repr(float(v))  # shortest round-trip representation: text and binary models agree exactly


def write_cameras_text(path: str | Path, cameras: dict[int, ColmapCamera]) -> None:
    lines = ["# Camera list with one line of data per camera:",
             "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]",
             f"# Number of cameras: {len(cameras)}"]
    for c in cameras.values():
        lines.append(" ".join([str(c.id), c.model, str(c.width), str(c.height)] + [_fmt(p) for p in c.params]))
    atomic_write_text(path, "\n".join(lines) + "\n")


def write_images_text(path: str | Path, images: dict[int, ColmapImage]) -> None:
    lines = ["# Image list with two lines of data per image:",
             "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
             "#   POINTS2D[] as (X, Y, POINT3D_ID)",
             f"# Number of images: {len(images)}"]
    for im in images.values():
        lines.append(" ".join([str(im.id)] + [_fmt(v) for v in (*im.qvec, *im.tvec)] + [str(im.camera_id), im.name]))
        lines.append(" ".join(f"{_fmt(x)} {_fmt(y)} {int(p)}" for (x, y), p in zip(im.xys, im.point3D_ids)))
    atomic_write_text(path, "\n".join(lines) + "\n")


def write_points3D_text(path: str | Path, points: ColmapPoints) -> None:
    lines = ["# 3D point list with one line of data per point:",
             "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)",
             f"# Number of points: {len(points)}"]
    for i in range(len(points)):
        a, b = points.track_offsets[i], points.track_offsets[i + 1]
        track = " ".join(f"{im} {ix}" for im, ix in zip(points.track_image_ids[a:b], points.track_point2D_idxs[a:b]))
        fields = ([str(points.ids[i])] + [_fmt(v) for v in points.xyz[i]] + [str(int(v)) for v in points.rgb[i]]
                  + [_fmt(points.errors[i])] + ([track] if track else []))
        lines.append(" ".join(fields))
    atomic_write_text(path, "\n".join(lines) + "\n")


def write_cameras_binary(path: str | Path, cameras: dict[int, ColmapCamera]) -> None:
    out = [struct.pack("<Q", len(cameras))]
    for c in cameras.values():
        model = CAMERA_MODEL_NAMES[c.model]
        out.append(struct.pack("<iiQQ", c.id, model.model_id, c.width, c.height))
        out.append(struct.pack(f"<{model.num_params}d", *c.params))
    atomic_write_bytes(path, b"".join(out))


def write_images_binary(path: str | Path, images: dict[int, ColmapImage]) -> None:
    out = [struct.pack("<Q", len(images))]
    for im in images.values():
        out.append(struct.pack("<i4d3di", im.id, *im.qvec, *im.tvec, im.camera_id))
        out.append(im.name.encode("utf-8") + b"\x00")
        pts = np.empty(len(im.point3D_ids), _POINT2D)
        pts["x"], pts["y"], pts["id"] = im.xys[:, 0], im.xys[:, 1], im.point3D_ids
        out.append(struct.pack("<Q", len(pts)) + pts.tobytes())
    atomic_write_bytes(path, b"".join(out))


def write_points3D_binary(path: str | Path, points: ColmapPoints) -> None:
    out = [struct.pack("<Q", len(points))]
    for i in range(len(points)):
        a, b = points.track_offsets[i], points.track_offsets[i + 1]
        out.append(struct.pack("<Q3d3BdQ", points.ids[i], *points.xyz[i], *points.rgb[i], points.errors[i], b - a))
        tr = np.empty(b - a, _TRACK)
        tr["image_id"], tr["point2D_idx"] = points.track_image_ids[a:b], points.track_point2D_idxs[a:b]
        out.append(tr.tobytes())
    atomic_write_bytes(path, b"".join(out))
