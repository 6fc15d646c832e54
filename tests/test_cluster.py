"""Clustering learnt features: identity features recover the objects, masks select clusters, and the
extract_features.py -> dino_train.py -> cluster.py -> eval_segmentation.py chain runs on a generated scene."""
from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from features.clustering import (ClusterConfig, MaskScores, cluster_gaussians, cluster_inputs, cluster_mask_scores,
                                 kmeans_labels, normalised_positions, palette, select_clusters, selection_labels)
from features.field import FieldConfig, FrozenGaussians, TargetMaps, render_features, train_feature_field
from gaussian_renderer import vote
from segmentation.demo import gaussians_from_synthetic, write_demo_data
from segmentation.synthetic import make_demo_scene

ROOT = Path(__file__).resolve().parents[1]
SIZE = 64


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _purity(truth: np.ndarray, pred: np.ndarray) -> float:
    """Fraction of items whose cluster's majority class is their own class."""
    hits = 0
    for c in np.unique(pred):
        hits += np.bincount(truth[pred == c]).max()
    return hits / len(truth)


@pytest.fixture(scope="module")
def identity_field():
    """Features trained on one-hot object-id maps (rendered, then downsampled 2x like a feature extractor)."""
    scene = make_demo_scene(num_views=12, size=SIZE, points_per_object=700, ground_points=1400, seed=0)
    g = FrozenGaussians.of(gaussians_from_synthetic(scene))
    onehot = torch.nn.functional.one_hot(torch.from_numpy(scene.object_ids).long(), 4).float()
    maps, contrib = {}, torch.zeros(len(g))
    for cam in scene.cameras:
        with torch.no_grad():
            m = render_features(cam, g, onehot, backend="cpu")
        maps[cam.image_name] = torch.nn.functional.avg_pool2d(m[None], 2)[0]
        contrib += vote(cam, g, torch.ones(SIZE, SIZE, 1), backend="cpu")[:, 0]
    res = train_feature_field(g, scene.cameras, TargetMaps(maps), FieldConfig(iterations=150, lr=0.05, backend="cpu"),
                              progress=False)
    visible = (contrib > 1.0).numpy()  # at least one pixel's worth of rendered weight over all views
    return scene, g, res, visible


@pytest.mark.slow
def test_identity_features_recover_objects(identity_field) -> None:
    scene, g, res, visible = identity_field
    truth = scene.object_ids[visible]
    xyz = g.get_xyz.numpy()
    labels = cluster_gaussians(res.features.numpy(), xyz, ClusterConfig(k=4))[visible]
    ari, purity = adjusted_rand_score(truth, labels), _purity(truth, labels)
    assert visible.sum() > 0.5 * len(visible)
    assert ari >= 0.85 and purity >= 0.9, (ari, purity)
    # negative control: without learnt features (position only) the objects are not recovered as well
    blind = cluster_gaussians(np.zeros_like(res.features.numpy()), xyz, ClusterConfig(k=4))[visible]
    assert adjusted_rand_score(truth, blind) < ari - 0.2


def test_select_by_mask_picks_the_object(identity_field) -> None:
    scene, g, res, visible = identity_field
    ids = cluster_gaussians(res.features.numpy(), g.get_xyz.numpy(), ClusterConfig(k=6))
    ball = scene.object_ids == 1
    cam = scene.cameras[1]
    with torch.no_grad():  # the ball's occlusion-aware silhouette in one view
        sil = render_features(cam, g, torch.from_numpy(ball).float()[:, None], backend="cpu")[0] > 0.5
    scores = cluster_mask_scores(g, ids, 6, [(cam, sil.numpy())], backend="cpu")
    labels = selection_labels(ids, select_clusters(scores, 0.5), res.seen.numpy())
    sel = labels == 1
    iou = (sel & ball & visible).sum() / ((sel | ball) & visible).sum()
    assert iou >= 0.9, iou
    # independent reference for the scores: per-Gaussian votes summed per cluster
    w = torch.stack([sil, ~sil], -1).float()
    v = vote(cam, g, w, backend="cpu").double().numpy()
    np.testing.assert_allclose(scores.inside, [v[ids == c, 0].sum() for c in range(6)], rtol=1e-6, atol=1e-9)


def test_selection_rules() -> None:
    scores = MaskScores(inside=np.array([5.0, 1.0, 0.0, 3.0]), total=np.array([6.0, 4.0, 0.0, 6.0]))
    np.testing.assert_array_equal(select_clusters(scores, 0.5), [True, False, False, True])
    np.testing.assert_array_equal(select_clusters(scores, 0.6), [True, False, False, False])
    labels = selection_labels(np.array([0, 1, 2, 3, 0]), select_clusters(scores, 0.5),
                              seen=np.array([True, True, True, True, False]))
    np.testing.assert_array_equal(labels, [1, 0, 0, 1, -1])


def test_cluster_inputs_normalisation() -> None:
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(1000, 5)).astype(np.float32)
    feats[:10] = 0.0  # never trained
    xyz = rng.normal(size=(1000, 3)) * 7 + 100
    x = cluster_inputs(feats, xyz, feature_weight=2.0, xyz_weight=0.5)
    norms = np.linalg.norm(x[:, :5], axis=1)
    np.testing.assert_allclose(norms[10:], 2.0, rtol=1e-5)
    assert np.all(x[:10, :5] == 0)
    r = np.linalg.norm(x[:, 5:], axis=1)
    assert abs(np.mean(r <= 0.5 + 1e-6) - 0.9) < 0.01       # 90 % of positions within xyz_weight
    assert np.abs(np.median(normalised_positions(xyz), axis=0)).max() < 1e-6


@pytest.mark.parametrize("minibatch", [False, True])
def test_kmeans_separates_blobs(minibatch: bool) -> None:
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(5, 8)) * 10
    truth = rng.integers(0, 5, 3000)
    x = (centres[truth] + rng.normal(size=(3000, 8))).astype(np.float32)
    cfg = ClusterConfig(k=5, minibatch_above=0 if minibatch else 10 ** 9)
    assert adjusted_rand_score(truth, kmeans_labels(x, cfg)) > 0.99
    np.testing.assert_array_equal(kmeans_labels(x, cfg), kmeans_labels(x, cfg))  # seeded


def test_palette_colours_are_distinct() -> None:
    p = palette(24)
    assert p.shape == (24, 3) and p.min() >= 0 and p.max() <= 1
    d = np.linalg.norm(p[:, None] - p[None], axis=2) + np.eye(24) * 9
    assert d.min() > 0.05


# ----- the scripts, end to end ------------------------------------------------------------------------------
def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, script, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return write_demo_data(tmp_path_factory.mktemp("feat_demo"), [1], num_views=16, size=SIZE, backend="cpu")


@pytest.mark.slow
def test_scripts_end_to_end(demo, tmp_path: Path) -> None:
    """classic features (colour separates the synthetic objects) -> field -> clusters -> select the ball with
    ONE training mask -> eval_segmentation.py on the held-out views."""
    feats = tmp_path / "features.pt"
    r = _run("extract_features.py", "-s", str(demo.source_path), "--out", str(feats), "--dim", "16", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "NOT DINO" in r.stdout
    r = _run("dino_train.py", "-m", str(demo.model_path), "--features", str(feats), "--iterations", "120",
             "--lr", "0.05", "--backend", "cpu", "--num_threads", "1", "--no-progress")
    assert r.returncode == 0, r.stderr
    field = demo.model_path / "features" / "gaussian_features.pt"
    cfg = json.loads((demo.model_path / "features" / "config.json").read_text())
    assert field.is_file() and cfg["channels"] == 16
    assert set(cfg["views"]) == {f"train/{n}" for n in demo.train_names}  # held-out views never trained on
    view = demo.train_names[0]
    out = tmp_path / "clusters"
    r = _run("cluster.py", "-m", str(demo.model_path), "--k", "8", "--out", str(out), "--render-views", "2",
             "--select-by-mask", view, str(demo.masks_path / f"{view}.png"), "--backend", "cpu", "--num_threads", "1")
    assert r.returncode == 0, r.stderr
    n = len(demo.scene.object_ids)
    ids = np.load(out / "labels.npy")
    assert ids.shape == (n,) and ids.min() >= 0 and ids.max() < 8
    assert len(list((out / "clusters").glob("cluster_*.ply"))) == len(np.unique(ids))
    assert (out / "clustered.ply").is_file() and len(list((out / "renders").glob("*.png"))) == 2
    sel = np.load(out / "selection" / "labels.npy")
    assert sel.shape == (n,) and set(np.unique(sel)) <= {-1, 0, 1}
    ball = demo.scene.object_ids == 1
    picked = sel == 1
    seen = sel >= 0
    assert (picked & ball & seen).sum() / max(1, ((picked | ball) & seen).sum()) > 0.8
    r = _run("eval_segmentation.py", "-m", str(demo.model_path), "--labels", str(out / "selection" / "labels.npy"),
             "--gt-masks", str(demo.gt_masks_path), "--backend", "cpu", "--no-progress")
    assert r.returncode == 0, r.stderr
    ev = json.loads((out / "selection" / "eval.json").read_text())
    assert ev["num_views"] == len(demo.test_names) and ev["miou"] > 0.8, ev["miou"]


@pytest.mark.slow
def test_cluster_errors_are_one_line(demo, tmp_path: Path) -> None:
    r = _run("cluster.py", "-m", str(demo.model_path), "--k", "3", "--features", str(tmp_path / "none.pt"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "none.pt" in r.stderr
    r = _run("dino_train.py", "-m", str(tmp_path / "nomodel"))
    assert r.returncode == 2 and "Traceback" not in r.stderr and "nomodel" in r.stderr
