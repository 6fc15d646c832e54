"""Inria 3DGS PLY: exact layout, bit-exact round trips, and clear errors on bad files."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from plyfile import PlyData, PlyElement

from utils.errors import UserError
from utils.ply import (GaussianPlyData, gaussian_ply_attributes, read_gaussian_ply, read_point_cloud_ply,
                       write_gaussian_ply, write_point_cloud_ply)


def _random_data(n: int, degree: int, seed: int = 0) -> GaussianPlyData:
    rng = np.random.default_rng(seed)
    k = (degree + 1) ** 2 - 1

    def r(*shape: int) -> np.ndarray:
        return rng.normal(size=shape).astype(np.float32)

    return GaussianPlyData(xyz=r(n, 3), f_dc=r(n, 3), f_rest=r(n, k, 3), opacity=r(n, 1), scale=r(n, 3),
                           rotation=r(n, 4))


def _inria_names(degree: int) -> list[str]:
    """Inria's construct_list_of_attributes, written out independently."""
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    names += ["f_rest_%d" % i for i in range(3 * ((degree + 1) ** 2 - 1))]
    names += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    return names


def _write_raw(path, columns: dict[str, np.ndarray], order: list[str]) -> None:
    """An arbitrary vertex PLY built directly with plyfile (the way Inria's save_ply does it)."""
    n = len(next(iter(columns.values())))
    rec = np.empty(n, dtype=[(name, "f4") for name in order])
    for name in order:
        rec[name] = columns[name]
    PlyData([PlyElement.describe(rec, "vertex")]).write(str(path))


def _columns(g: GaussianPlyData) -> dict[str, np.ndarray]:
    """Map GaussianPlyData to Inria's per-property columns by hand (channel-major f_rest)."""
    k = g.f_rest.shape[1]
    cols = {"x": g.xyz[:, 0], "y": g.xyz[:, 1], "z": g.xyz[:, 2], "opacity": g.opacity[:, 0]}
    for name in ("nx", "ny", "nz"):
        cols[name] = np.zeros(len(g), np.float32)
    for c in range(3):
        cols[f"f_dc_{c}"] = g.f_dc[:, c]
        cols[f"scale_{c}"] = g.scale[:, c]
        for j in range(k):
            cols[f"f_rest_{c * k + j}"] = g.f_rest[:, j, c]
    for c in range(4):
        cols[f"rot_{c}"] = g.rotation[:, c]
    return cols


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_round_trip_is_bit_exact(tmp_path, degree):
    g = _random_data(37, degree, seed=degree)
    a, b = tmp_path / "a.ply", tmp_path / "b.ply"
    write_gaussian_ply(a, g)
    back = read_gaussian_ply(a)
    assert back.sh_degree == degree
    for field in ("xyz", "f_dc", "f_rest", "opacity", "scale", "rotation"):
        np.testing.assert_array_equal(getattr(back, field), getattr(g, field), err_msg=field)
    write_gaussian_ply(b, back)
    assert a.read_bytes() == b.read_bytes()


@pytest.mark.parametrize("degree", [0, 3])
def test_bytes_equal_inria_save_ply(tmp_path, degree):
    """Our writer produces the same bytes as Inria's save_ply recipe (list of tuples, default byte order)."""
    g = _random_data(11, degree, seed=5)
    ours, ref = tmp_path / "ours.ply", tmp_path / "ref.ply"
    write_gaussian_ply(ours, g)
    n = len(g)
    f_rest_flat = g.f_rest.transpose(0, 2, 1).reshape(n, -1)  # Inria: transpose(1, 2).flatten(start_dim=1)
    attrs = np.concatenate((g.xyz, np.zeros_like(g.xyz), g.f_dc, f_rest_flat, g.opacity, g.scale, g.rotation),
                           axis=1)
    elements = np.empty(n, dtype=[(a, "f4") for a in _inria_names(degree)])
    elements[:] = list(map(tuple, attrs))
    PlyData([PlyElement.describe(elements, "vertex")]).write(str(ref))
    assert ours.read_bytes() == ref.read_bytes()
    header = ours.read_bytes().split(b"end_header\n")[0].decode()
    assert header.startswith("ply\nformat binary_little_endian 1.0\nelement vertex 11\n")
    assert [p.name for p in PlyData.read(str(ours))["vertex"].properties] == _inria_names(degree)


def test_independent_inria_layout_reads_back(tmp_path):
    """Values coded by (row, property index) land where Inria's load_ply puts them."""
    n, degree = 4, 3
    names = _inria_names(degree)
    cols = {name: (1000.0 * np.arange(n) + j).astype(np.float32) for j, name in enumerate(names)}
    path = tmp_path / "coded.ply"
    _write_raw(path, cols, names)
    g = read_gaussian_ply(path)
    assert g.sh_degree == 3 and g.f_rest.shape == (n, 15, 3)
    row = 1000.0 * np.arange(n)[:, None]
    idx = {name: j for j, name in enumerate(names)}
    np.testing.assert_array_equal(g.xyz, row + [idx["x"], idx["y"], idx["z"]])
    np.testing.assert_array_equal(g.f_dc, row + [6, 7, 8])
    for j in range(15):
        for c in range(3):
            # channel-major: f_rest_{c*15 + j} is coefficient j of channel c
            np.testing.assert_array_equal(g.f_rest[:, j, c], row[:, 0] + idx[f"f_rest_{c * 15 + j}"])
    np.testing.assert_array_equal(g.opacity[:, 0], row[:, 0] + idx["opacity"])
    np.testing.assert_array_equal(g.scale, row + [idx[f"scale_{i}"] for i in range(3)])
    np.testing.assert_array_equal(g.rotation, row + [idx[f"rot_{i}"] for i in range(4)])


def test_reads_other_property_order_and_warns_on_extras(tmp_path):
    g = _random_data(6, 1, seed=2)
    cols = _columns(g)
    cols["segment_id"] = np.arange(6, dtype=np.float32)
    order = list(reversed(list(cols)))  # any order, plus an unknown property
    path = tmp_path / "fork.ply"
    _write_raw(path, cols, order)
    with pytest.warns(UserWarning, match="segment_id") as rec:
        back = read_gaussian_ply(path)
    assert len(rec) == 1
    np.testing.assert_array_equal(back.f_rest, g.f_rest)
    np.testing.assert_array_equal(back.rotation, g.rotation)


def test_non_finite_rows_dropped_with_count(tmp_path):
    g = _random_data(10, 2, seed=3)
    g.xyz[2, 1] = np.nan
    g.f_rest[5, 7, 2] = np.inf
    g.rotation[5, 0] = -np.inf
    g.opacity[9, 0] = np.nan
    path = tmp_path / "nan.ply"
    write_gaussian_ply(path, g)
    with pytest.warns(UserWarning, match=r"dropped 3 of 10 Gaussians"):
        back = read_gaussian_ply(path)
    keep = np.array([i not in (2, 5, 9) for i in range(10)])
    assert len(back) == 7
    np.testing.assert_array_equal(back.f_rest, g.f_rest[keep])
    np.testing.assert_array_equal(back.xyz, g.xyz[keep])


def test_clean_file_gives_no_warning(tmp_path):
    path = tmp_path / "ok.ply"
    write_gaussian_ply(path, _random_data(5, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_gaussian_ply(path)


def test_missing_properties_named(tmp_path):
    cols = _columns(_random_data(3, 0))
    order = [n for n in _inria_names(0) if n not in ("opacity", "rot_2")]
    path = tmp_path / "missing.ply"
    _write_raw(path, cols, order)
    with pytest.raises(UserError) as e:
        read_gaussian_ply(path)
    msg = str(e.value)
    assert str(path) in msg and "opacity" in msg and "rot_2" in msg and "\n" not in msg
    assert "scale_0" not in msg.split(";")[0]


def test_bad_f_rest_count(tmp_path):
    cols = _columns(_random_data(3, 1))  # 9 f_rest
    order = [n for n in _inria_names(1) if n != "f_rest_8"]
    path = tmp_path / "rest.ply"
    _write_raw(path, cols, order)
    with pytest.raises(UserError, match="8 f_rest"):
        read_gaussian_ply(path)


@pytest.mark.parametrize("content", [b"", b"hello world, not a ply\n" * 10, bytes(range(256)) * 4, "truncated"])
def test_garbage_files_raise_user_error(tmp_path, content):
    path = tmp_path / "bad.ply"
    if content == "truncated":
        write_gaussian_ply(path, _random_data(20, 3))
        data = path.read_bytes()
        path.write_bytes(data[: len(data) - 10])
    else:
        path.write_bytes(content)
    with pytest.raises(UserError) as e:
        read_gaussian_ply(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_missing_file_and_wrong_element(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_gaussian_ply(tmp_path / "nope.ply")
    rec = np.zeros(3, dtype=[("x", "f4")])
    path = tmp_path / "face.ply"
    PlyData([PlyElement.describe(rec, "face")]).write(str(path))
    with pytest.raises(UserError, match="no 'vertex' element"):
        read_gaussian_ply(path)


def test_write_is_atomic_on_failure(tmp_path):
    path = tmp_path / "keep.ply"
    write_gaussian_ply(path, _random_data(4, 0))
    before = path.read_bytes()
    bad = _random_data(4, 0)
    bad.f_rest = np.zeros((4, 5, 3), np.float32)  # invalid coefficient count
    with pytest.raises(ValueError):
        write_gaussian_ply(path, bad)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.ply"]


def test_attribute_names_helper():
    for d in range(4):
        assert gaussian_ply_attributes(d) == _inria_names(d)
    assert len(gaussian_ply_attributes(3)) == 62


def test_point_cloud_ply_inria_store_layout(tmp_path):
    rng = np.random.default_rng(1)
    xyz = rng.normal(size=(50, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, size=(50, 3), dtype=np.uint8)
    path = tmp_path / "input.ply"
    write_point_cloud_ply(path, xyz, rgb)
    ply = PlyData.read(str(path))
    v = ply["vertex"]
    assert [(p.name, p.val_dtype) for p in v.properties] == [
        ("x", "f4"), ("y", "f4"), ("z", "f4"), ("nx", "f4"), ("ny", "f4"), ("nz", "f4"),
        ("red", "u1"), ("green", "u1"), ("blue", "u1")]
    assert not ply.text and ply.byte_order in ("<", "=")
    pcd = read_point_cloud_ply(path)
    np.testing.assert_array_equal(pcd.points, xyz)
    np.testing.assert_allclose(pcd.colors, rgb / 255.0, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(pcd.normals, 0)
    # float colours in [0, 1] are rounded to the same bytes
    write_point_cloud_ply(tmp_path / "f.ply", xyz, rgb.astype(np.float32) / 255.0)
    assert (tmp_path / "f.ply").read_bytes() == path.read_bytes()


# ---------------------------------------------------------------------------------------------------------
# The vectorised reader/writer for Inria's exact layout against plyfile (the general path)
# ---------------------------------------------------------------------------------------------------------
def _plyfile_reads(path):
    from utils.ply import _read_with_plyfile

    return _read_with_plyfile(path)


def _assert_same(a: GaussianPlyData, b: GaussianPlyData) -> None:
    for field in ("xyz", "f_dc", "f_rest", "opacity", "scale", "rotation"):
        x, y = getattr(a, field), getattr(b, field)
        assert x.dtype == y.dtype == np.float32 and x.shape == y.shape, field
        assert x.tobytes() == y.tobytes(), field  # bit for bit, NaN payloads and -0.0 included


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
@pytest.mark.parametrize("normals", [True, False])
@pytest.mark.parametrize("shuffled", [False, True])
def test_fast_reader_equals_plyfile(tmp_path, degree, normals, shuffled, monkeypatch):
    g = _random_data(70_000 if degree == 3 else 300, degree, seed=degree)  # > one 65536-row batch at degree 3
    g.xyz[3, 0] = -0.0
    cols = _columns(g)
    order = [n for n in _inria_names(degree) if normals or n not in ("nx", "ny", "nz")]
    if shuffled:
        order = list(np.random.default_rng(1).permutation(order))
    path = tmp_path / "g.ply"
    _write_raw(path, cols, order)
    import utils.ply

    def no_plyfile(path):  # noqa: ANN001
        raise AssertionError("Inria's layout must not go through plyfile")

    with monkeypatch.context() as m:
        m.setattr(utils.ply, "_read_with_plyfile", no_plyfile)
        fast = read_gaussian_ply(path)
    _assert_same(fast, _plyfile_reads(path))
    _assert_same(fast, g)


def test_other_layouts_fall_back_to_plyfile(tmp_path, monkeypatch):
    """ASCII, big endian, doubles, extra elements or properties: plyfile reads them, same values."""
    import utils.ply

    g = _random_data(9, 1, seed=4)
    cols = _columns(g)
    names = _inria_names(1)
    rec = np.empty(len(g), dtype=[(n, "f4") for n in names])
    for n in names:
        rec[n] = cols[n]
    variants = {
        "ascii": PlyData([PlyElement.describe(rec, "vertex")], text=True),
        "big": PlyData([PlyElement.describe(rec, "vertex")], byte_order=">"),
        "double": PlyData([PlyElement.describe(rec.astype([(n, "f8") for n in names]), "vertex")]),
        "faces": PlyData([PlyElement.describe(rec, "vertex"),
                          PlyElement.describe(np.zeros(2, dtype=[("v", "i4")]), "face")]),
    }
    calls = []
    real = utils.ply._read_with_plyfile
    monkeypatch.setattr(utils.ply, "_read_with_plyfile", lambda p: calls.append(p.name) or real(p))
    for name, ply in variants.items():
        ply.write(str(tmp_path / f"{name}.ply"))
        _assert_same(read_gaussian_ply(tmp_path / f"{name}.ply"), g)
    assert calls == [f"{name}.ply" for name in variants]


def test_writer_bytes_equal_plyfile_and_rows(tmp_path):
    """The writer's bytes are plyfile's for the same records, also for a row selection (= subset + write)."""
    g = _random_data(70_001, 3, seed=8)
    rows = np.random.default_rng(2).random(len(g)) < 0.3
    ours, ref, sub = tmp_path / "ours.ply", tmp_path / "ref.ply", tmp_path / "sub.ply"
    write_gaussian_ply(ours, g, rows)
    picked = GaussianPlyData(xyz=g.xyz[rows], f_dc=g.f_dc[rows], f_rest=g.f_rest[rows], opacity=g.opacity[rows],
                             scale=g.scale[rows], rotation=g.rotation[rows])
    _write_raw(ref, _columns(picked), _inria_names(3))
    assert ours.read_bytes() == ref.read_bytes()
    write_gaussian_ply(sub, g, np.flatnonzero(rows))  # indices work too
    assert sub.read_bytes() == ref.read_bytes()
    write_gaussian_ply(sub, g, np.zeros(len(g), bool))  # nothing selected: a valid empty PLY
    assert len(read_gaussian_ply(sub)) == 0 and len(PlyData.read(str(sub))["vertex"].data) == 0


def test_fast_and_plyfile_drop_the_same_non_finite_rows(tmp_path):
    g = _random_data(12, 3, seed=3)
    g.f_rest[4, 14, 1] = np.nan
    g.scale[7, 2] = np.inf
    path = tmp_path / "nan.ply"
    write_gaussian_ply(path, g)
    with pytest.warns(UserWarning, match=r"dropped 2 of 12 Gaussians") as rec:
        fast = read_gaussian_ply(path)
    assert len(rec) == 1
    with pytest.warns(UserWarning, match=r"dropped 2 of 12 Gaussians"):
        slow = _plyfile_reads(path)
    _assert_same(fast, slow)
    assert len(fast) == 10


@pytest.mark.parametrize("cut", [1, 247, 4000])
def test_truncated_inria_file_is_one_line_error(tmp_path, cut):
    path = tmp_path / "cut.ply"
    write_gaussian_ply(path, _random_data(20, 3))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - cut])
    with pytest.raises(UserError, match="truncated") as e:
        read_gaussian_ply(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)
