"""benchmarks/upsample.py (children drawn from their parent) and bench_scale.py's scene preparation."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from benchmarks.upsample import upsample
from utils.ply import GaussianPlyData


def _parents(n: int = 3, seed: int = 0) -> GaussianPlyData:
    rng = np.random.default_rng(seed)
    r = lambda *s: rng.normal(size=s).astype(np.float32)  # noqa: E731
    return GaussianPlyData(xyz=r(n, 3) * 5, f_dc=r(n, 3), f_rest=r(n, 15, 3), opacity=r(n, 1),
                           scale=np.log(np.array([[0.5, 0.1, 0.02]] * n, np.float32)) + r(n, 3) * 0.1,
                           rotation=r(n, 4))


def test_children_follow_their_parent():
    g = _parents()
    s = 20000
    u = upsample(g, s, seed=1)
    assert len(u) == 3 * s
    for p in range(3):
        kids = slice(p * s, (p + 1) * s)
        for field in ("f_dc", "f_rest", "opacity", "rotation"):
            assert np.array_equal(getattr(u, field)[kids], np.repeat(getattr(g, field)[p:p + 1], s, axis=0))
        np.testing.assert_allclose(u.scale[kids], np.broadcast_to(g.scale[p] - math.log(s) / 3, (s, 3)), rtol=0,
                                   atol=1e-5)
        # centres ~ N(parent, R diag(scale^2) R^T): compare with the parent's covariance
        q = g.rotation[p] / np.linalg.norm(g.rotation[p])
        w, x, y, z = q
        rot = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])
        cov = rot @ np.diag(np.exp(2 * g.scale[p].astype(np.float64))) @ rot.T
        d = u.xyz[kids].astype(np.float64) - g.xyz[p]
        sd = float(np.exp(g.scale[p]).max())
        np.testing.assert_allclose(d.mean(0), 0, atol=0.05 * sd)
        np.testing.assert_allclose(np.cov(d.T), cov, atol=0.05 * sd ** 2)


def test_deterministic_and_s1_is_a_copy():
    g = _parents(70_000 // 1000, seed=2)
    a, b, c = upsample(g, 3, 7), upsample(g, 3, 7), upsample(g, 3, 8)
    assert a.xyz.tobytes() == b.xyz.tobytes() and a.xyz.tobytes() != c.xyz.tobytes()
    one = upsample(g, 1, 0)
    assert one.xyz.tobytes() == g.xyz.tobytes() and one.xyz is not g.xyz
    with pytest.raises(ValueError):
        upsample(g, 0, 0)


def test_model_folder_cameras_and_masks_scaled(tmp_path):
    cv2 = pytest.importorskip("cv2")
    from benchmarks.bench_scale import build_masks, build_model_folder

    model = tmp_path / "m"
    model.mkdir()
    cams = [{"id": 0, "img_name": "a", "width": 64, "height": 32, "position": [0, 0, 0],
             "rotation": [[1, 0, 0], [0, 1, 0], [0, 0, 1]], "fx": 50.0, "fy": 40.0}]
    (model / "cameras.json").write_text(json.dumps(cams))
    (model / "cfg_args").write_text("Namespace(sh_degree=3, source_path='/x/y', model_path='/old', eval=True)")
    ply = tmp_path / "g.ply"
    ply.write_bytes(b"ply\n")
    folder = build_model_folder(model, ply, 128, tmp_path / "cache")
    c = json.loads((folder / "cameras.json").read_text())[0]
    assert (c["width"], c["height"], c["fx"], c["fy"]) == (128, 128, 100.0, 160.0)
    assert "source_path=''" in (folder / "cfg_args").read_text()
    assert (folder / "point_cloud" / "iteration_1" / "point_cloud.ply").resolve() == ply.resolve()
    masks = tmp_path / "masks"
    masks.mkdir()
    m = np.zeros((32, 64), np.uint8)
    m[5:9, 10:20] = 255
    cv2.imwrite(str(masks / "a.png"), m)
    big = cv2.imread(str(build_masks(masks, 128, tmp_path / "cache") / "a.png"), cv2.IMREAD_UNCHANGED)
    assert big.shape == (128, 128) and set(np.unique(big)) == {0, 255}  # nearest: still binary
    assert build_masks(masks, 64, tmp_path / "cache2") != masks  # 64x32 is not 64x64
