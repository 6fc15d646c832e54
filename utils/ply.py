"""Inria's 3DGS PLY, read and written exactly (plyfile), plus Inria's input.ply point-cloud layout.

Gaussian PLY: binary little endian, one ``vertex`` element, float32 properties in this order::

    x y z nx ny nz f_dc_0..2 f_rest_0..(3K-1) opacity scale_0..2 rot_0..3     K = (D+1)^2 - 1

``f_rest`` is channel-major (all K red coefficients, then green, then blue); opacity is a logit, scales are
logs, rotations are unnormalised (w, x, y, z) quaternions. Normals are written as zeros, as Inria does.
A file written here and read back gives the same arrays, and rewriting it gives the same bytes.
"""
from __future__ import annotations

import mmap
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional

import numpy as np

from utils.errors import UserError
from utils.io import atomic_path


@dataclass
class BasicPointCloud:
    """Initial points (COLMAP points3D, a point-cloud PLY or random); scene.types re-exports it."""

    points: np.ndarray   # [P, 3] float32 world coordinates
    colors: np.ndarray   # [P, 3] float32 RGB in [0, 1]
    normals: Optional[np.ndarray] = None  # [P, 3] float32 (zeros in Inria)

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

    Files in Inria's exact layout (binary little endian, one vertex element, float32 properties only, in any
    order) are read by a vectorised reader; anything else (ASCII, big endian, other elements or types,
    extra properties) goes through plyfile. Both give the same arrays. Rows with NaN/Inf in any used
    property are dropped with a counted warning; unknown properties (other forks add some) are ignored with
    one warning naming them.
    """
    path = Path(path)
    layout = _inria_layout(path)
    if layout is None:
        return _read_with_plyfile(path)
    return _read_fast(path, layout)


def _property_plan(path: Path, names: list[str]) -> tuple[int, list[str]]:
    """(SH degree, unknown property names) of a vertex element's property names; bad sets raise UserError."""
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
    known = set(_REQUIRED) | _KNOWN_OPTIONAL | {f"f_rest_{i}" for i in rest_idx}
    return degree, [n for n in names if n not in known]


def _field_names(k: int) -> dict[str, list[str]]:
    """GaussianPlyData field -> the PLY properties it holds, in array order (f_rest: [k, 3] row-major,
    i.e. coefficient j of channel c is f_rest_{c*k + j})."""
    return {"xyz": ["x", "y", "z"], "f_dc": ["f_dc_0", "f_dc_1", "f_dc_2"],
            "f_rest": [f"f_rest_{c * k + j}" for j in range(k) for c in range(3)], "opacity": ["opacity"],
            "scale": ["scale_0", "scale_1", "scale_2"], "rotation": ["rot_0", "rot_1", "rot_2", "rot_3"]}


def _drop_non_finite(path: Path, g: GaussianPlyData, finite: np.ndarray) -> GaussianPlyData:
    """finite: [N] bool, rows whose used properties are all finite."""
    n_bad = int((~finite).sum())
    if not n_bad:
        return g
    warnings.warn(f"{path}: dropped {n_bad} of {len(finite)} Gaussians with NaN/Inf values", stacklevel=3)
    return GaussianPlyData(xyz=g.xyz[finite], f_dc=g.f_dc[finite], f_rest=g.f_rest[finite],
                           opacity=g.opacity[finite], scale=g.scale[finite], rotation=g.rotation[finite])


def _read_with_plyfile(path: Path) -> GaussianPlyData:
    """The general reader (any PLY plyfile parses): columns copied out of plyfile's structured array."""
    vertex = _vertex(_read_plydata(path, "Gaussian PLY"), path)
    data = vertex.data
    names = [p.name for p in vertex.properties]
    degree, extra = _property_plan(path, names)
    if extra:
        warnings.warn(f"{path}: ignoring {len(extra)} unknown PLY properties: {', '.join(extra)}", stacklevel=3)
    k = (degree + 1) ** 2 - 1
    n = len(data)

    def cols(keys: list[str]) -> np.ndarray:  # [N, len(keys)] float32
        if not keys:
            return np.zeros((n, 0), dtype=np.float32)
        return np.stack([np.asarray(data[key], dtype=np.float32) for key in keys], axis=1)

    fields = {f: cols(keys) for f, keys in _field_names(k).items()}
    g = GaussianPlyData(xyz=fields["xyz"], f_dc=fields["f_dc"], f_rest=fields["f_rest"].reshape(n, k, 3),
                        opacity=fields["opacity"], scale=fields["scale"], rotation=fields["rotation"])
    finite = np.ones(n, dtype=bool)
    for a in fields.values():
        finite &= np.isfinite(a).all(axis=1)
    return _drop_non_finite(path, g, finite)


# ---------------------------------------------------------------------------------------------------------
# Inria's exact layout, vectorised (a 6 M-Gaussian file is 1.4 GB: plyfile's record parsing and the
# column-by-column copies cost 3-4x a straight read)
# ---------------------------------------------------------------------------------------------------------
_HEADER_MAX = 1 << 20          # bytes searched for end_header
_CHUNK_ROWS = 1 << 16          # rows per read/write batch: bounds the temporaries (16 MB at 62 properties)


@dataclass(frozen=True)
class _Layout:
    header_bytes: int          # body offset
    count: int                 # vertices
    names: list[str]           # float32 properties, file order
    degree: int


def _inria_layout(path: Path) -> Optional[_Layout]:
    """The header of a file in Inria's exact layout with only known properties, else None (plyfile reads
    it and reports what is wrong). A body shorter than the header says is a one-line UserError."""
    try:
        with open(path, "rb") as f:
            head = f.read(_HEADER_MAX)
            size = os.fstat(f.fileno()).st_size
    except OSError:
        return None
    end = head.find(b"end_header\n")
    if not head.startswith(b"ply\n") or end < 0:
        return None
    lines = head[:end].decode("ascii", errors="replace").split("\n")
    if len(lines) < 3 or lines[1].split() != ["format", "binary_little_endian", "1.0"]:
        return None
    count: Optional[int] = None
    names: list[str] = []
    for line in lines[2:]:
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "element" and len(words) == 3 and words[1] == "vertex" and count is None \
                and words[2].isdigit():
            count = int(words[2])
        elif words[0] == "property" and len(words) == 3 and words[1] in ("float", "float32") and count is not None:
            names.append(words[2])
        else:
            return None  # another element, a list or non-float property: plyfile's job
    if count is None or len(set(names)) != len(names):
        return None
    try:
        degree, extra = _property_plan(path, names)
    except UserError:
        return None  # plyfile's path raises the same error
    if extra:
        return None  # plyfile's path warns about them
    header_bytes = end + len(b"end_header\n")
    expected = count * len(names) * 4
    body = size - header_bytes
    if body < expected:
        raise UserError(f"{path}: not a readable PLY file (truncated: {body:,} of {expected:,} bytes of vertex "
                        "data); re-export it or point to the right file")
    if body > expected:
        return None
    return _Layout(header_bytes, count, names, degree)


def _empty(*shape: int) -> np.ndarray:  # float32, uninitialised
    """A large array in anonymous mmap'ed memory (4 KiB pages, faulted in as they are written).

    numpy asks the kernel for transparent huge pages on large arrays (MADV_HUGEPAGE); on a machine where
    they cannot be had (fragmented memory, some VMs) each fault then tries compaction first, which
    measured 2x the page-fault time of a 1.4 GB load here. The array keeps its mapping alive."""
    nbytes = int(np.prod(shape)) * 4
    if nbytes < (1 << 22):
        return np.empty(shape, np.float32)
    return np.frombuffer(mmap.mmap(-1, nbytes), dtype=np.float32).reshape(shape)


def _read_fast(path: Path, layout: _Layout) -> GaussianPlyData:
    """Batches of rows read straight into a float32 buffer and scattered into the output arrays."""
    n, p = layout.count, len(layout.names)
    k = (layout.degree + 1) ** 2 - 1
    col = {name: i for i, name in enumerate(layout.names)}
    g = GaussianPlyData(xyz=_empty(n, 3), f_dc=_empty(n, 3), f_rest=_empty(n, k, 3), opacity=_empty(n, 1),
                        scale=_empty(n, 3), rotation=_empty(n, 4))
    plan = []  # (output [N, c] view, source columns [c] as a slice when contiguous in the file)
    for field, keys in _field_names(k).items():
        idx = np.array([col[key] for key in keys], dtype=np.intp)
        src: slice | np.ndarray = idx
        if len(idx) and (np.diff(idx) == 1).all():
            src = slice(int(idx[0]), int(idx[-1]) + 1)
        plan.append((getattr(g, field).reshape(n, len(keys)), src))
    finite = np.empty(n, dtype=bool)
    buf = np.empty((min(n, _CHUNK_ROWS), p), dtype="<f4")
    try:
        with open(path, "rb") as f:
            f.seek(layout.header_bytes)
            for a in range(0, n, _CHUNK_ROWS):
                m = min(_CHUNK_ROWS, n - a)
                chunk = buf[:m]
                if f.readinto(memoryview(chunk).cast("B")) != chunk.nbytes:
                    raise UserError(f"{path}: not a readable PLY file (truncated while reading); re-export it or "
                                    "point to the right file")
                ok = finite[a:a + m]
                ok[:] = True
                for dest, src in plan:
                    part = dest[a:a + m]
                    part[:] = chunk[:, src]
                    ok &= np.isfinite(part).all(axis=1)
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror or e}); check permissions and the path") from None
    return _drop_non_finite(path, g, finite)


def write_gaussian_ply(path: str | Path, g: GaussianPlyData, rows: Optional[np.ndarray] = None) -> None:
    """Write ``g`` (or only its ``rows``) in Inria's layout, atomically; normals are zeros, as in Inria's
    save_ply. The bytes are exactly what plyfile writes for the same records.

    rows: np.ndarray  # [N] bool or [M] int indices; None: all rows
    """
    n = len(g)
    k = g.f_rest.shape[1]
    if k not in (0, 3, 8, 15):
        raise ValueError(f"f_rest has {k} coefficients per channel; expected 0, 3, 8 or 15")
    names = gaussian_ply_attributes(g.sh_degree)
    sel = None if rows is None else np.asarray(rows)
    if sel is not None and sel.dtype == bool:
        if sel.shape != (n,):
            raise ValueError(f"rows has shape {sel.shape}, expected ({n},)")
        sel = np.flatnonzero(sel)
    m_total = n if sel is None else len(sel)
    header = "\n".join(["ply", "format binary_little_endian 1.0", f"element vertex {m_total}"]
                       + [f"property float {name}" for name in names] + ["end_header"]) + "\n"
    # columns of one record: x y z | nx ny nz (zeros) | f_dc | f_rest channel-major | opacity | scale | rot
    fields = [(np.asarray(g.xyz, np.float32).reshape(n, 3), 0), (np.asarray(g.f_dc, np.float32).reshape(n, 3), 6),
              (np.asarray(g.opacity, np.float32).reshape(n, 1), 9 + 3 * k),
              (np.asarray(g.scale, np.float32).reshape(n, 3), 10 + 3 * k),
              (np.asarray(g.rotation, np.float32).reshape(n, 4), 13 + 3 * k)]
    f_rest = np.asarray(g.f_rest, np.float32).reshape(n, k, 3)
    buf = np.zeros((max(1, min(m_total, _CHUNK_ROWS)), len(names)), dtype="<f4")
    rest_view = buf[:, 9:9 + 3 * k].reshape(buf.shape[0], 3, k)  # a view: [rows, channel, coefficient]

    def records() -> Iterator[memoryview]:  # the body, _CHUNK_ROWS records at a time
        for a in range(0, m_total, _CHUNK_ROWS):
            m = min(_CHUNK_ROWS, m_total - a)
            idx = slice(a, a + m) if sel is None else sel[a:a + m]
            for arr, c0 in fields:
                buf[:m, c0:c0 + arr.shape[1]] = arr[idx]
            rest_view[:m] = f_rest[idx].transpose(0, 2, 1)
            yield memoryview(buf[:m]).cast("B")

    with atomic_path(path) as tmp:
        _write_file(tmp, header.encode("ascii"), records())


def _write_file(path: Path, header: bytes, body: Iterable[memoryview]) -> None:
    with open(path, "wb") as f:
        f.write(header)
        for part in body:
            f.write(part)


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


def read_point_cloud_ply(path: str | Path) -> BasicPointCloud:
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
    return BasicPointCloud(points=pts, colors=cols.astype(np.float32), normals=nrm)
