"""Inria model folders: iteration lookup, safe cfg_args, cameras.json in Inria's convention, clear errors."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from arguments import ModelParams, write_cfg_args
from scene.cameras import Camera
from scene.gaussian_model import GaussianModel
from scene.model_folder import (find_iteration, load_model, read_cameras_json, save_model,
                                write_cameras_json)
from utils.errors import UserError

INRIA_CFG = ("Namespace(data_device='cuda', depths='', eval=True, images='images', model_path='./output/"
             "5c7e1a2b-3', resolution=-1, sh_degree=3, source_path='/data/360/garden', train_test_exp=False, "
             "white_background=False)")


def _gaussians(n: int, degree: int = 3, seed: int = 0) -> GaussianModel:
    g = torch.Generator().manual_seed(seed)
    k = (degree + 1) ** 2 - 1
    return GaussianModel.from_tensors(torch.randn(n, 3, generator=g), torch.randn(n, 1, 3, generator=g),
                                      torch.randn(n, k, 3, generator=g), torch.randn(n, 3, generator=g),
                                      torch.randn(n, 4, generator=g), torch.randn(n, 1, generator=g))


def _model_folder(tmp_path, cfg: str | None = INRIA_CFG):
    root = tmp_path / "model"
    for it, n in ((500, 5), (7000, 6), (30000, 7)):
        save_model(root, it, _gaussians(n, seed=it))
    (root / "point_cloud" / "iteration_99999").mkdir()  # interrupted save: no PLY, ignored
    (root / "point_cloud" / "notes.txt").write_text("x")
    if cfg is not None:
        (root / "cfg_args").write_text(cfg)
    return root


def _camera(uid: int, seed: int, cx_off: float = 0.0) -> Camera:
    rng = np.random.default_rng(seed)
    w2c = np.eye(4)
    w2c[:3, :3] = Rotation.random(random_state=seed).as_matrix()
    w2c[:3, 3] = rng.normal(size=3) * 3
    return Camera(uid=uid, image_name=f"IMG_{uid:04d}", width=640, height=480, fx=500.0 + uid, fy=510.5 + uid,
                  cx=320.0 + cx_off, cy=240.0, world_to_camera=w2c)


# ----- iterations and loading ----------------------------------------------------------------------
def test_find_iteration(tmp_path):
    root = _model_folder(tmp_path)
    assert find_iteration(root) == 30000
    assert find_iteration(root, -1) == 30000
    assert find_iteration(root, 7000) == 7000
    with pytest.raises(UserError) as e:
        find_iteration(root, 1234)
    msg = str(e.value)
    assert "1234" in msg and "500, 7000, 30000" in msg and "99999" not in msg and "\n" not in msg


def test_load_model_newest_and_given(tmp_path):
    root = _model_folder(tmp_path)
    params, g, it = load_model(root)
    assert it == 30000 and len(g) == 7 and g.max_sh_degree == 3 and g.active_sh_degree == 3
    assert isinstance(params, ModelParams)
    assert params.source_path == "/data/360/garden" and params.eval is True and params.data_device == "cuda"
    assert params.model_path == str(root)  # the folder actually read, not the training-time path
    ref = _gaussians(7, seed=30000)
    torch.testing.assert_close(g._features_rest, ref._features_rest, rtol=0, atol=0)
    _, g7, it7 = load_model(root, iteration=7000)
    assert it7 == 7000 and len(g7) == 6


def test_load_model_without_cfg_args_warns(tmp_path):
    root = _model_folder(tmp_path, cfg=None)
    with pytest.warns(UserWarning, match="cfg_args"):
        params, g, it = load_model(root)
    assert params.source_path == "" and params.model_path == str(root) and len(g) == 7


def test_cfg_args_round_trip_and_degree_from_ply(tmp_path):
    root = tmp_path / "m"
    save_model(root, 10, _gaussians(4, degree=1))
    write_cfg_args(root / "cfg_args", ModelParams(sh_degree=3, source_path="/x/y", resolution=4))
    with pytest.warns(UserWarning, match="sh_degree=3 but the PLY has degree 1"):
        params, g, _ = load_model(root)
    assert params.source_path == "/x/y" and params.resolution == 4 and params.sh_degree == 1
    assert g.max_sh_degree == 1


@pytest.mark.parametrize("cfg", [
    "Namespace(sh_degree=3, source_path=__import__('os').system('touch {marker}'))",
    "__import__('os').system('touch {marker}')",
    "Namespace(**{{'a': __import__('os').system('touch {marker}')}})",
])
def test_malicious_cfg_args_rejected_not_executed(tmp_path, cfg):
    marker = tmp_path / "MARKER"
    root = _model_folder(tmp_path, cfg=cfg.format(marker=marker))
    with pytest.raises(UserError) as e:
        load_model(root)
    assert "cfg_args" in str(e.value)
    assert not marker.exists()


def test_missing_folder_errors(tmp_path):
    with pytest.raises(UserError, match="model folder not found"):
        load_model(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="point_cloud: missing"):
        find_iteration(tmp_path / "empty")
    (tmp_path / "empty" / "point_cloud" / "iteration_5").mkdir(parents=True)
    with pytest.raises(UserError, match="no iteration_N/point_cloud.ply"):
        find_iteration(tmp_path / "empty")


def test_corrupt_ply_names_file(tmp_path):
    root = _model_folder(tmp_path)
    bad = root / "point_cloud" / "iteration_30000" / "point_cloud.ply"
    bad.write_bytes(bad.read_bytes()[:300])
    with pytest.raises(UserError) as e:
        load_model(root)
    assert str(bad) in str(e.value) and "\n" not in str(e.value)
    _, g, it = load_model(root, iteration=500)  # other iterations still load
    assert it == 500 and len(g) == 5


def test_save_model_layout_and_bytes(tmp_path):
    g = _gaussians(12, degree=2)
    path = save_model(tmp_path / "out", 42, g)
    assert path == tmp_path / "out" / "point_cloud" / "iteration_42" / "point_cloud.ply"
    with pytest.warns(UserWarning, match="cfg_args"):  # no cfg_args in this folder
        _, back, it = load_model(tmp_path / "out")
    assert it == 42
    save_model(tmp_path / "again", 42, back)
    assert (tmp_path / "again" / "point_cloud" / "iteration_42" / "point_cloud.ply").read_bytes() == \
        path.read_bytes()


# ----- cameras.json --------------------------------------------------------------------------------
def _inria_camera_to_json(idx: int, R_inria: np.ndarray, T: np.ndarray, width: int, height: int,
                          fovx: float, fovy: float, name: str) -> dict:
    """Inria's utils/camera_utils.camera_to_JSON, re-typed: its Camera.R is the TRANSPOSED w2c rotation."""
    Rt = np.zeros((4, 4))
    Rt[:3, :3] = R_inria.transpose()
    Rt[:3, 3] = T
    Rt[3, 3] = 1.0
    W2C = np.linalg.inv(Rt)  # (sic: this is camera-to-world)
    pos = W2C[:3, 3]
    rot = W2C[:3, :3]

    def fov2focal(fov: float, pixels: int) -> float:
        return pixels / (2 * math.tan(fov / 2))

    return {"id": idx, "img_name": name, "width": width, "height": height, "position": pos.tolist(),
            "rotation": [x.tolist() for x in rot], "fy": fov2focal(fovy, height), "fx": fov2focal(fovx, width)}


def test_cameras_json_round_trip(tmp_path):
    cams = [_camera(i, seed=i) for i in range(5)] + [_camera(9, seed=9, cx_off=3.25)]
    path = tmp_path / "cameras.json"
    write_cameras_json(path, cams)
    back = read_cameras_json(path)
    assert len(back) == len(cams)
    for a, b in zip(cams, back):
        assert (a.uid, a.image_name, a.width, a.height, a.fx, a.fy, a.cx, a.cy) == \
            (b.uid, b.image_name, b.width, b.height, b.fx, b.fy, b.cx, b.cy)
        np.testing.assert_allclose(b.world_to_camera, a.world_to_camera, rtol=0, atol=1e-12)
    entries = json.loads(path.read_text())
    assert "cx" not in entries[0] and entries[5]["cx"] == 323.25  # extra keys only when off-centre
    for cam, e in zip(cams, entries):
        np.testing.assert_allclose(e["position"], cam.camera_center, atol=1e-12)
        np.testing.assert_allclose(e["rotation"], cam.R.T, atol=1e-12)  # camera-to-world


def test_reads_cameras_json_written_by_inria(tmp_path):
    cams = [_camera(i, seed=20 + i) for i in range(4)]
    entries = [_inria_camera_to_json(i, c.R.T, c.T, c.width, c.height, c.FoVx, c.FoVy, c.image_name)
               for i, c in enumerate(cams)]
    path = tmp_path / "cameras.json"
    path.write_text(json.dumps(entries))
    back = read_cameras_json(path)
    for c, b in zip(cams, back):
        np.testing.assert_allclose(b.world_to_camera, c.world_to_camera, atol=1e-12)
        np.testing.assert_allclose(b.camera_center, c.camera_center, atol=1e-12)
        assert b.fx == pytest.approx(c.fx, rel=1e-12) and b.fy == pytest.approx(c.fy, rel=1e-12)
        assert (b.cx, b.cy) == (320.0, 240.0) and b.image_name == c.image_name
    # and ours writes what Inria writes, key for key
    ours_path = tmp_path / "ours.json"
    write_cameras_json(ours_path, [Camera(i, c.image_name, c.width, c.height, c.fx, c.fy, c.cx, c.cy,
                                          c.world_to_camera) for i, c in enumerate(cams)])
    ours = json.loads(ours_path.read_text())
    for a, b in zip(ours, entries):
        assert list(a) == list(b)
        np.testing.assert_allclose(a["rotation"], b["rotation"], atol=1e-12)
        np.testing.assert_allclose(a["position"], b["position"], atol=1e-12)
        assert a["fx"] == pytest.approx(b["fx"], rel=1e-12)


@pytest.mark.parametrize("content,match", [
    ("{not json", "not valid JSON"),
    ('{"a": 1}', "JSON list"),
    ('[{"id": 0, "img_name": "a", "width": 4, "height": 4, "fx": 1, "fy": 1, "position": [0, 0]}]',
     "entry 0 is malformed"),
    ('[{"id": 0, "img_name": "a", "width": 4, "height": 4, "fx": 1, "fy": 1, "position": [0, 0],'
     ' "rotation": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]}]', "3x3 rotation"),
])
def test_bad_cameras_json(tmp_path, content, match):
    path = tmp_path / "cameras.json"
    path.write_text(content)
    with pytest.raises(UserError, match=match) as e:
        read_cameras_json(path)
    assert str(path) in str(e.value)
    with pytest.raises(UserError, match="not found"):
        read_cameras_json(tmp_path / "missing.json")
