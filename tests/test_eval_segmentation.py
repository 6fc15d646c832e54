"""eval_segmentation.py and segmentation/evaluate.py: metrics on hand-made cases, the rendered selection
mask against a closed-form prediction (occlusion included), and the command line."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from scene.cameras import Camera
from segmentation.evaluate import EvalResult, ViewScore, score_view
from segmentation.labels import render_label_map

ROOT = Path(__file__).resolve().parents[1]
W = H = 32
F = 40.0
# Two isotropic Gaussians seen by a camera at the origin looking down +z:
# A (selected, label 1) on the axis at depth 4, B in front of it at depth 2, shifted right.
CENTRES = np.array([[0.0, 0.0, 4.0], [0.12, 0.0, 2.0]])
SCALES = np.array([0.3, 0.06])
OPACITY = np.array([0.9, 0.97])


def _camera(name: str = "cam0") -> Camera:
    return Camera(uid=0, image_name=name, width=W, height=H, fx=F, fy=F, cx=W / 2, cy=H / 2,
                  world_to_camera=np.eye(4))


def _model():
    from scene.gaussian_model import GaussianModel
    from utils.general import inverse_sigmoid

    n = len(CENTRES)
    rot = torch.zeros(n, 4)
    rot[:, 0] = 1
    return GaussianModel.from_tensors(torch.tensor(CENTRES, dtype=torch.float32), torch.zeros(n, 1, 3),
                                      torch.zeros(n, 15, 3),
                                      torch.log(torch.tensor(SCALES, dtype=torch.float32))[:, None].repeat(1, 3),
                                      rot, inverse_sigmoid(torch.tensor(OPACITY, dtype=torch.float32))[:, None])


def _alpha(k: int) -> np.ndarray:  # [H, W] closed-form alpha of Gaussian k (Inria's rules)
    x, y, z = CENTRES[k]
    # EWA: J = [[f/z, 0, -f x/z^2], [0, f/z, -f y/z^2]], isotropic 3D covariance s^2 I, +0.3 dilation
    J = np.array([[F / z, 0, -F * x / z**2], [0, F / z, -F * y / z**2]])
    cov = SCALES[k] ** 2 * J @ J.T + 0.3 * np.eye(2)
    conic = np.linalg.inv(cov)
    mx, my = F * x / z + W / 2, F * y / z + H / 2            # COLMAP frame; pixel centres at i + 0.5
    px, py = np.meshgrid(np.arange(W) + 0.5 - mx, np.arange(H) + 0.5 - my)
    power = -0.5 * (conic[0, 0] * px**2 + conic[1, 1] * py**2) - conic[0, 1] * px * py
    a = np.minimum(0.99, OPACITY[k] * np.exp(power))
    return np.where(a < 1 / 255, 0.0, a)


def _expected_single() -> np.ndarray:
    """B (depth 2) is composited first: rendered indicator of A = (1 - alpha_B) alpha_A."""
    value = (1 - _alpha(1)) * _alpha(0)
    assert np.abs(value - 0.5).min() > 1e-3, "pick parameters that keep pixels away from the threshold"
    return (value > 0.5).astype(np.int32)


def test_score_view_by_hand():
    pred = np.zeros((4, 4), int)
    gt = np.zeros((4, 4), int)
    pred[0, :3] = 1          # 3 predicted pixels
    gt[0, 1:] = 1            # 3 true pixels, 2 shared -> IoU 2 / 4
    ious, acc = score_view(pred, gt, 1)
    assert ious == [0.5] and acc == 14 / 16
    # two labels; label 2 absent from both -> None; label 1 perfect
    ious, acc = score_view(pred, pred, 2)
    assert ious == [1.0, None] and acc == 1.0
    gt2 = gt.copy()
    gt2[3, 3] = 2
    pred2 = pred.copy()
    pred2[3, 2:] = 2         # label 2: 2 predicted, 1 true, 1 shared -> 1/2
    ious, acc = score_view(pred2, gt2, 2)
    assert ious == [0.5, 0.5] and acc == 13 / 16
    r = EvalResult(["a", "b"], [ViewScore("v1", 0.5, 0.75, [0.5, None]), ViewScore("v2", None, 1.0, [None, None]),
                                ViewScore("v3", 1.0, 0.25, [1.0, 1.0])])
    assert r.miou == 0.75 and r.macc == 2 / 3            # views without any label are left out of mIoU only
    assert r.label_miou() == [0.75, 1.0]
    assert "mean" in r.table()


def test_rendered_selection_mask_matches_closed_form_with_occlusion():
    g = _model()
    pred = render_label_map(_camera(), g, np.array([1, 0]), 1, backend="cpu")
    expected = _expected_single()
    alone = (_alpha(0) > 0.5)
    assert expected.sum() >= 20 and (alone & ~expected.astype(bool)).sum() >= 3, "B must occlude part of A"
    np.testing.assert_array_equal(pred, expected)
    # several labels: one-hot colours, argmax where the labelled alpha exceeds 0.5
    both = render_label_map(_camera(), g, np.array([1, 2]), 2, backend="cpu")
    c1, c2 = (1 - _alpha(1)) * _alpha(0), _alpha(1)
    mass = c1 + c2
    assert np.abs(mass - 0.5).min() > 1e-3 and np.abs(c1 - c2)[mass > 0.5].min() > 1e-3
    np.testing.assert_array_equal(both, np.where(mass > 0.5, np.where(c2 > c1, 2, 1), 0))


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    """A model folder without a source (cameras from cameras.json) holding the two Gaussians."""
    from arguments import ModelParams, write_cfg_args
    from scene.model_folder import save_model, write_cameras_json

    d = tmp_path_factory.mktemp("evalmodel")
    write_cfg_args(d / "cfg_args", ModelParams(model_path=str(d)))
    write_cameras_json(d / "cameras.json", [_camera()])
    save_model(d, 30, _model())
    np.save(d / "labels.npy", np.array([1, 0]))
    return d


def _eval_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "eval_segmentation.py", *args, "--no-progress"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_eval_cli_iou_computed_by_hand(model_folder, tmp_path):
    pred = _expected_single().astype(bool)
    gt = pred.copy()
    ys, xs = np.nonzero(pred)
    gt[ys[:2], xs[:2]] = False                       # 2 predicted pixels are not in the ground truth
    extra = np.argwhere(~pred)[:5]
    gt[extra[:, 0], extra[:, 1]] = True              # 5 true pixels were missed
    n = int(pred.sum())
    iou = (n - 2) / (n + 5)                          # intersection / union, by hand
    acc = (W * H - 7) / (W * H)
    (tmp_path / "gt").mkdir()
    cv2.imwrite(str(tmp_path / "gt" / "cam0.png"), gt.astype(np.uint8) * 255)
    r = _eval_cli("-m", str(model_folder), "--labels", str(model_folder / "labels.npy"), "--gt-masks",
                  str(tmp_path / "gt"), "--split", "all", "--out", str(tmp_path / "eval.json"))
    assert r.returncode == 0, r.stderr
    data = json.loads((tmp_path / "eval.json").read_text())
    assert data["miou"] == pytest.approx(iou, abs=1e-12) and data["macc"] == pytest.approx(acc, abs=1e-12)
    assert data["views"][0]["name"] == "cam0" and data["num_views"] == 1
    assert f"{iou:.4f}" in r.stdout and "cam0" in r.stdout


@pytest.mark.slow
def test_eval_cli_errors_are_one_line(model_folder, tmp_path):
    np.save(tmp_path / "short.npy", np.array([1]))
    (tmp_path / "gt").mkdir()
    cv2.imwrite(str(tmp_path / "gt" / "cam0.png"), np.zeros((H, W), np.uint8))
    cases = [
        ["-m", str(model_folder), "--labels", str(tmp_path / "short.npy"), "--gt-masks", str(tmp_path / "gt")],
        ["-m", str(model_folder), "--labels", str(tmp_path / "none.npy"), "--gt-masks", str(tmp_path / "gt")],
        ["-m", str(model_folder), "--labels", str(model_folder / "labels.npy"), "--gt-masks", str(tmp_path / "no")],
    ]
    procs = [subprocess.Popen([sys.executable, "eval_segmentation.py", *c, "--split", "all", "--out",
                               str(tmp_path / "e.json"), "--no-progress"], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for c in cases]
    for p, c in zip(procs, cases):
        out, err = p.communicate(timeout=300)
        assert p.returncode == 2, (c, err)
        assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err, err
    assert not (tmp_path / "e.json").exists()
