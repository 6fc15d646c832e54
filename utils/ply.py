"""Inria's 3DGS PLY, read and written exactly (plyfile), plus Inria's input.ply point-cloud layout.

Gaussian PLY: binary little endian, one ``vertex`` element, float32 properties in this order::

    x y z nx ny nz f_dc_0..2 f_rest_0..(3K-1) opacity scale_0..2 rot_0..3     K = (D+1)^2 - 1

``f_rest`` is channel-major (all K red coefficients, then green, then blue); opacity is a logit, scales are
logs, rotations are unnormalised (w, x, y, z) quaternions. Normals are written as zeros, as Inria does.
A file written here and read back gives the same arrays, and rewriting it gives the same bytes.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from utils.errors import UserError
from utils.io import atomic_path

if TYPE_CHECKING:
    from scene.types import BasicPointCloud

_REQUIRED = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
             "rot_0", "rot_1", "rot_2", "rot_3"]
_KNOWN_OPTIONAL = {"nx", "ny", "nz"}
_F_REST = re.compile(r"f_rest_(\d+)$")
# number of f_rest properties -> SH degree
_REST_TO_DEGREE = {3 * ((d + 1) ** 2 - 1): d for d in range(4)}


@dataclass
class GaussianPlyData:
    """The raw (pre-activation) per-Gaussian values of an Inria PLY, float32."""

    xyz: np.ndarray       # [N, 3]
    f_dc: np.ndarray      # [N, 3]  DC coefficient per channel (R, G, B)
    f_rest: np.ndarray    # [N, K, 3]  higher-order coefficients, K = (D+1)^2 - 1 (Inria's _features_rest)
    opacity: np.ndarray   # [N, 1]  logit
    scale: np.ndarray     # [N, 3]  log
    rotation: np.ndarray  # [N, 4]  (w, x, y, z), unnormalised

    @property
    def sh_degree(self) -> int:
        return int(round(np.sqrt(self.f_rest.shape[1] + 1))) - 1

    def __len__(self) -> int:
        return int(self.xyz.shape[0])


def gaussian_ply_attributes(sh_degree: int) -> list[str]:
    """Property names in Inria's order for an SH degree 0..3."""
    n_rest = 3 * ((sh_degree + 1) ** 2 - 1)
    return (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
            + [f"f_rest_{i}" for i in range(n_rest)]
            + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])


def _read_plydata(path: Path, what: str):  # -> plyfile.PlyData
    from plyfile import PlyData, PlyParseError

    if not path.is_file():
        raise UserError(f"{path}: {what} not found; check the path")
    try:
        # Copy-on-write memory map: plyfile's mmap=False path parses row by row (~30 s per 200k Gaussians).
        # Callers copy the columns out (np.stack), so the map is released and the file never modified.
        return PlyData.read(str(path), mmap="c")
    except (PlyParseError, ValueError, EOFError, UnicodeDecodeError, IndexError, KeyError, TypeError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{path}: not a readable PLY file ({msg}); re-export it or point to the right file") \
            from None
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror or e}); check permissions and the path") from None


def _vertex(ply, path: Path):  # -> plyfile.PlyElement
    names = [el.name for el in ply.elements]
    if "vertex" not in names:
        raise UserError(f"{path}: no 'vertex' element (found {names or 'none'}); expected a 3DGS/point-cloud PLY")
    return ply["vertex"]


def read_gaussian_ply(path: str | Path) -> GaussianPlyData:
    """Read an Inria 3DGS PLY. The SH degree comes from the number of ``f_rest_*`` properties.

    Rows with NaN/Inf in any used property are dropped with a counted warning; unknown properties
    (other forks add some) are ignored with one warning naming them.
    """
    path = Path(path)
    vertex = _vertex(_read_plydata(path, "Gaussian PLY"), path)
    data = vertex.data
    names = [p.name for p in vertex.properties]
    present = set(names)

    missing = [n for n in _REQUIRED if n not in present]
    if missing:
        raise UserError(f"{path}: missing PLY properties {', '.join(missing)}; expected an Inria 3DGS "
                        f"point_cloud.ply (compressed or other formats must be converted first)")

    rest_idx = sorted(int(m.group(1)) for n in names if (m := _F_REST.match(n)))
    if len(rest_idx) not in _REST_TO_DEGREE or rest_idx != list(range(len(rest_idx))):
        raise UserError(f"{path}: {len(rest_idx)} f_rest properties (indices {rest_idx[:3]}...); expected "
                        f"f_rest_0..f_rest_(n-1) with n in 0, 9, 24, 45 (SH degree 0..3)")
    degree = _REST_TO_DEGREE[len(rest_idx)]
    k = (degree + 1) ** 2 - 1

    known = set(_REQUIRED) | _KNOWN_OPTIONAL | {f"f_rest_{i}" for i in rest_idx}
    extra = [n for n in names if n not in known]
    if extra:
        warnings.warn(f"{path}: ignoring {len(extra)} unknown PLY properties: {', '.join(extra)}", stacklevel=2)

    def cols(keys: list[str]) -> np.ndarray:  # [N, len(keys)] float32
        if not keys:
            return np.zeros((len(data), 0), dtype=np.float32)
        return np.stack([np.asarray(data[n], dtype=np.float32) for n in keys], axis=1)

    xyz = cols(["x", "y", "z"])
    f_dc = cols(["f_dc_0", "f_dc_1", "f_dc_2"])
    # channel-major on disk: f_rest_{c*K + k} -> [N, 3, K] -> [N, K, 3]
    f_rest = cols([f"f_rest_{i}" for i in range(3 * k)]).reshape(len(data), 3, k).transpose(0, 2, 1)
    opacity = cols(["opacity"])
    scale = cols(["scale_0", "scale_1", "scale_2"])
    rotation = cols(["rot_0", "rot_1", "rot_2", "rot_3"])

    finite = (np.isfinite(xyz).all(1) & np.isfinite(f_dc).all(1) & np.isfinite(f_rest).all((1, 2))
              & np.isfinite(opacity).all(1) & np.isfinite(scale).all(1) & np.isfinite(rotation).all(1))
    n_bad = int((~finite).sum())
    if n_bad:
        warnings.warn(f"{path}: dropped {n_bad} of {len(finite)} Gaussians with NaN/Inf values", stacklevel=2)
        xyz, f_dc, f_rest = xyz[finite], f_dc[finite], f_rest[finite]
        opacity, scale, rotation = opacity[finite], scale[finite], rotation[finite]

    return GaussianPlyData(xyz=xyz, f_dc=f_dc, f_rest=np.ascontiguousarray(f_rest), opacity=opacity,
                           scale=scale, rotation=rotation)


def write_gaussian_ply(path: str | Path, g: GaussianPlyData) -> None:
    """Write ``g`` in Inria's layout, atomically (normals are zeros, as in Inria's save_ply)."""
    n = len(g)
    k = g.f_rest.shape[1]
    if k not in (0, 3, 8, 15):
        raise ValueError(f"f_rest has {k} coefficients per channel; expected 0, 3, 8 or 15")
    columns = np.concatenate([
        np.asarray(g.xyz, dtype=np.float32).reshape(n, 3),
        np.zeros((n, 3), dtype=np.float32),
        np.asarray(g.f_dc, dtype=np.float32).reshape(n, 3),
        np.asarray(g.f_rest, dtype=np.float32).reshape(n, k, 3).transpose(0, 2, 1).reshape(n, 3 * k),
        np.asarray(g.opacity, dtype=np.float32).reshape(n, 1),
        np.asarray(g.scale, dtype=np.float32).reshape(n, 3),
        np.asarray(g.rotation, dtype=np.float32).reshape(n, 4),
    ], axis=1)
    _write_vertex(path, columns, [(name, "<f4") for name in gaussian_ply_attributes(g.sh_degree)])


def _write_vertex(path: str | Path, columns: np.ndarray, dtype: list[tuple[str, str]]) -> None:
    from plyfile import PlyData, PlyElement

    # All properties are float32: the [N, P] array already has the record layout, view it as records.
    records = np.ascontiguousarray(columns, dtype="<f4").view(np.dtype(dtype)).reshape(columns.shape[0])
    el = PlyElement.describe(records, "vertex")
    with atomic_path(path) as tmp:
        PlyData([el], text=False, byte_order="<").write(str(tmp))


def write_point_cloud_ply(path: str | Path, xyz: np.ndarray, rgb: np.ndarray) -> None:
    """Inria's ``storePly`` layout (input.ply / points3D.ply): x y z nx ny nz float32, red green blue uint8.

    xyz: np.ndarray  # [P, 3]
    rgb: np.ndarray  # [P, 3] uint8 0..255, or float in [0, 1] (rounded to uint8)
    """
    xyz = np.asarray(xyz, dtype=np.float32).reshape(-1, 3)
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8:
        rgb = np.round(np.clip(rgb.astype(np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)
    rgb = rgb.reshape(-1, 3)
    if rgb.shape[0] != xyz.shape[0]:
        raise ValueError(f"xyz has {xyz.shape[0]} points but rgb has {rgb.shape[0]}")
    from plyfile import PlyData, PlyElement

    dtype = [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("nx", "<f4"), ("ny", "<f4"), ("nz", "<f4"),
             ("red", "u1"), ("green", "u1"), ("blue", "u1")]
    records = np.empty(xyz.shape[0], dtype=dtype)
    for i, name in enumerate(("x", "y", "z")):
        records[name] = xyz[:, i]
    for name in ("nx", "ny", "nz"):
        records[name] = 0.0
    for i, name in enumerate(("red", "green", "blue")):
        records[name] = rgb[:, i]
    el = PlyElement.describe(records, "vertex")
    with atomic_path(path) as tmp:
        PlyData([el], text=False, byte_order="<").write(str(tmp))


def read_point_cloud_ply(path: str | Path) -> "BasicPointCloud":
    """Inria's ``fetchPly``: points [P, 3] float32, colours [P, 3] float32 in [0, 1], normals [P, 3].

    Missing normals read as zeros; rows with NaN/Inf positions are dropped with a counted warning.
    """
    path = Path(path)
    vertex = _vertex(_read_plydata(path, "point-cloud PLY"), path)
    present = {p.name for p in vertex.properties}
    missing = [n for n in ("x", "y", "z", "red", "green", "blue") if n not in present]
    if missing:
        raise UserError(f"{path}: missing PLY properties {', '.join(missing)}; expected x y z red green blue")
    d = vertex.data
    pts = np.stack([np.asarray(d[n], dtype=np.float32) for n in ("x", "y", "z")], axis=1)
    cols = np.stack([np.asarray(d[n], dtype=np.float32) for n in ("red", "green", "blue")], axis=1) / 255.0
    if {"nx", "ny", "nz"} <= present:
        nrm = np.stack([np.asarray(d[n], dtype=np.float32) for n in ("nx", "ny", "nz")], axis=1)
    else:
        nrm = np.zeros_like(pts)
    ok = np.isfinite(pts).all(1)
    if not ok.all():
        warnings.warn(f"{path}: dropped {int((~ok).sum())} of {len(ok)} points with NaN/Inf positions",
                      stacklevel=2)
        pts, cols, nrm = pts[ok], cols[ok], nrm[ok]
    from scene.types import BasicPointCloud

    return BasicPointCloud(points=pts, colors=cols.astype(np.float32), normals=nrm)
