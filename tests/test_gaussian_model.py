"""GaussianModel: Inria's initialisation, activations, PLY mapping, densification and checkpoints."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from plyfile import PlyData
from scipy.spatial.transform import Rotation

from arguments import OptimizationParams
from scene.gaussian_model import GaussianModel, random_point_cloud
from scene.types import BasicPointCloud
from utils.general import get_expon_lr_func, mean_sq_knn_dist

SH_C0 = 0.28209479177387814


def _brute_dist2(points: np.ndarray) -> np.ndarray:
    """Mean of the squared distances to the 3 nearest other points, by brute force in float64."""
    p = points.astype(np.float64)
    d2 = ((p[:, None, :] - p[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d2, np.inf)
    return np.sort(d2, axis=1)[:, :3].mean(1)


def _model(n: int = 8, degree: int = 3, seed: int = 0) -> GaussianModel:
    g = torch.Generator().manual_seed(seed)
    k = (degree + 1) ** 2 - 1
    return GaussianModel.from_tensors(
        xyz=torch.randn(n, 3, generator=g), features_dc=torch.randn(n, 1, 3, generator=g),
        features_rest=torch.randn(n, k, 3, generator=g), scaling=torch.randn(n, 3, generator=g) - 3,
        rotation=torch.randn(n, 4, generator=g), opacity=torch.randn(n, 1, generator=g))


def _fake_step(model: GaussianModel, seed: int) -> None:
    """One Adam step with row-distinct gradients, so every row has its own moments."""
    g = torch.Generator().manual_seed(seed)
    model.optimizer.zero_grad(set_to_none=True)
    loss = sum((p * torch.randn(p.shape, generator=g)).sum() for p in
               (model._xyz, model._features_dc, model._features_rest, model._opacity, model._scaling,
                model._rotation))
    loss.backward()
    model.optimizer.step()


# ----- initialisation ------------------------------------------------------------------------------
def test_knn_matches_distcuda2_semantics():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(400, 3)).astype(np.float32) * [1.0, 2.0, 0.5]
    pts = np.concatenate([pts, pts[:10]]).astype(np.float32)  # exact duplicates
    ours = mean_sq_knn_dist(pts)
    ref = _brute_dist2(pts)
    assert ours.dtype == np.float32 and ours.shape == (410,)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-9)
    assert np.all(ours[:10] == ours[400:])  # a duplicate's 0 counts once, like its twin's


def test_create_from_pcd_values():
    rng = np.random.default_rng(1)
    pts = rng.uniform(-2, 2, size=(300, 3)).astype(np.float32)
    pts[-4:] = pts[-5]  # five identical points: squared distance 0 -> clamped to 1e-7
    cols = rng.uniform(0, 1, size=(300, 3)).astype(np.float32)
    model = GaussianModel(3)
    model.create_from_pcd(BasicPointCloud(points=pts, colors=cols), spatial_lr_scale=4.5)
    assert len(model) == 300 and model.spatial_lr_scale == 4.5
    assert model.active_sh_degree == 0 and model.max_sh_degree == 3
    torch.testing.assert_close(model.get_xyz, torch.from_numpy(pts), rtol=0, atol=0)
    expect_scale = np.log(np.sqrt(np.maximum(_brute_dist2(pts), 1e-7)))
    np.testing.assert_allclose(model._scaling.detach().numpy(), np.repeat(expect_scale[:, None], 3, 1),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model._scaling[-1, 0].item(), math.log(math.sqrt(1e-7)), rtol=1e-5)
    np.testing.assert_array_equal(model._rotation.detach().numpy(), np.tile([1.0, 0, 0, 0], (300, 1)))
    np.testing.assert_allclose(model.get_opacity.detach().numpy(), 0.1, rtol=1e-6)
    np.testing.assert_allclose(model._features_dc.detach().numpy()[:, 0], (cols - 0.5) / SH_C0, rtol=1e-5,
                               atol=1e-6)
    assert model._features_rest.shape == (300, 15, 3) and not model._features_rest.any()
    assert model.get_features.shape == (300, 16, 3)
    assert all(p.is_leaf and p.requires_grad for p in (model._xyz, model._scaling, model._opacity))


def test_random_point_cloud():
    bounds = np.array([[-1.0, 0.0, 2.0], [3.0, 0.5, 2.5]])
    a = random_point_cloud(bounds, 5000, seed=7)
    b = random_point_cloud(bounds, 5000, seed=7)
    c = random_point_cloud(bounds, 5000, seed=8)
    assert a.points.shape == (5000, 3) and a.points.dtype == np.float32
    assert np.all(a.points >= bounds[0] - 1e-6) and np.all(a.points <= bounds[1] + 1e-6)
    # spread over the whole box, not a corner
    np.testing.assert_allclose(a.points.mean(0), bounds.mean(0), atol=0.05 * (bounds[1] - bounds[0]).max())
    np.testing.assert_array_equal(a.points, b.points)
    assert not np.array_equal(a.points, c.points)
    # Inria: SH2RGB(random / 255) -> near grey
    assert np.all(a.colors >= 0.5) and np.all(a.colors <= 0.5 + SH_C0 / 255 + 1e-7)
    np.testing.assert_array_equal(a.normals, 0)


# ----- activations --------------------------------------------------------------------------------
def test_activations_and_covariance():
    m = _model(20, degree=2)
    s = np.exp(m._scaling.detach().numpy().astype(np.float64))
    q = m._rotation.detach().numpy().astype(np.float64)
    rot = Rotation.from_quat(q[:, [1, 2, 3, 0]]).as_matrix()  # scipy: (x, y, z, w)
    cov = rot @ (s[:, :, None] ** 2 * np.eye(3)) @ rot.transpose(0, 2, 1) * 1.0
    cov_mod = rot @ ((0.5 * s)[:, :, None] ** 2 * np.eye(3)) @ rot.transpose(0, 2, 1)
    iu = ([0, 0, 0, 1, 1, 2], [0, 1, 2, 1, 2, 2])
    np.testing.assert_allclose(m.get_covariance().detach().numpy(), cov[:, iu[0], iu[1]], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(m.get_covariance(0.5).detach().numpy(), cov_mod[:, iu[0], iu[1]], rtol=1e-4,
                               atol=1e-8)
    np.testing.assert_allclose(m.get_scaling.detach().numpy(), s, rtol=1e-6)
    np.testing.assert_allclose(m.get_rotation.detach().numpy(), q / np.linalg.norm(q, axis=1, keepdims=True),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m.get_opacity.detach().numpy(), 1 / (1 + np.exp(-m._opacity.detach().numpy())),
                               rtol=1e-6)
    f = m.get_features
    assert f.shape == (20, 9, 3)
    torch.testing.assert_close(f[:, :1], m.get_features_dc, rtol=0, atol=0)
    torch.testing.assert_close(f[:, 1:], m.get_features_rest, rtol=0, atol=0)
    assert m.active_sh_degree == 2
    m.active_sh_degree = 0
    for expect in (1, 2, 2):
        m.oneup_sh_degree()
        assert m.active_sh_degree == expect


def test_save_load_ply_and_disk_layout(tmp_path):
    m = _model(9, degree=3)
    path = tmp_path / "pc" / "point_cloud.ply"
    m.save_ply(path)
    v = PlyData.read(str(path))["vertex"]
    rest = m._features_rest.detach().numpy()
    for c in range(3):
        for j in range(15):
            np.testing.assert_array_equal(v[f"f_rest_{c * 15 + j}"], rest[:, j, c])
    np.testing.assert_array_equal(v["f_dc_1"], m._features_dc.detach().numpy()[:, 0, 1])
    np.testing.assert_array_equal(v["rot_0"], m._rotation.detach().numpy()[:, 0])
    np.testing.assert_array_equal(v["opacity"], m._opacity.detach().numpy()[:, 0])
    other = GaussianModel(0)
    other.load_ply(path)
    assert other.max_sh_degree == 3 and other.active_sh_degree == 3
    for name in ("_xyz", "_features_dc", "_features_rest", "_scaling", "_rotation", "_opacity"):
        torch.testing.assert_close(getattr(other, name), getattr(m, name), rtol=0, atol=0)
    other.save_ply(tmp_path / "again.ply")
    assert (tmp_path / "again.ply").read_bytes() == path.read_bytes()


def test_subset():
    m = _model(10, degree=1)
    m.active_sh_degree = 1
    m.spatial_lr_scale = 3.0
    mask = torch.tensor([i % 3 == 0 for i in range(10)])
    s = m.subset(mask)
    assert len(s) == 4 and s.max_sh_degree == 1 and s.active_sh_degree == 1 and s.spatial_lr_scale == 3.0
    for name in ("_xyz", "_features_dc", "_features_rest", "_scaling", "_rotation", "_opacity"):
        torch.testing.assert_close(getattr(s, name), getattr(m, name)[mask], rtol=0, atol=0)
    s2 = m.subset(np.array([9, 0]))
    torch.testing.assert_close(s2.get_xyz, m.get_xyz[[9, 0]], rtol=0, atol=0)
    with torch.no_grad():
        s._xyz += 1.0
    torch.testing.assert_close(m.get_xyz[mask] + 1.0, s.get_xyz)  # independent copies
    with pytest.raises(ValueError):
        m.subset(torch.ones(3, dtype=torch.bool))


def test_save_ply_rows_equals_subset_save(tmp_path):
    m = _model(50, degree=2, seed=3)
    rows = torch.rand(50, generator=torch.Generator().manual_seed(1)) < 0.4
    m.subset(rows).save_ply(tmp_path / "subset.ply")
    m.save_ply(tmp_path / "rows.ply", rows=rows)
    m.save_ply(tmp_path / "idx.ply", rows=rows.nonzero()[:, 0].numpy())
    assert (tmp_path / "rows.ply").read_bytes() == (tmp_path / "subset.ply").read_bytes()
    assert (tmp_path / "idx.ply").read_bytes() == (tmp_path / "subset.ply").read_bytes()


def test_from_tensors_copies_its_inputs_and_load_ply_owns_its_arrays(tmp_path):
    xyz = torch.randn(6, 3)
    m = GaussianModel.from_tensors(xyz, torch.zeros(6, 1, 3), torch.zeros(6, 0, 3), torch.zeros(6, 3),
                                   torch.ones(6, 4), torch.zeros(6, 1))
    assert m._xyz.data_ptr() != xyz.data_ptr()  # the caller's tensor is never the parameter
    m.save_ply(tmp_path / "a.ply")
    other = GaussianModel(0)
    other.load_ply(tmp_path / "a.ply")
    for name in ("_xyz", "_features_dc", "_features_rest", "_scaling", "_rotation", "_opacity"):
        t = getattr(other, name)
        assert t.is_leaf and t.requires_grad and t.is_contiguous() and t.dtype == torch.float32
    torch.testing.assert_close(other.get_xyz, xyz, rtol=0, atol=0)


# ----- training machinery --------------------------------------------------------------------------
def test_training_setup_and_lr_schedule():
    m = _model(5)
    m.spatial_lr_scale = 2.5
    opt = OptimizationParams()
    m.training_setup(opt)
    groups = {g["name"]: g for g in m.optimizer.param_groups}
    assert list(groups) == ["xyz", "f_dc", "f_rest", "opacity", "scaling", "rotation"]
    assert groups["xyz"]["lr"] == pytest.approx(opt.position_lr_init * 2.5)
    assert groups["f_rest"]["lr"] == pytest.approx(opt.feature_lr / 20)
    assert groups["opacity"]["lr"] == opt.opacity_lr and groups["rotation"]["lr"] == opt.rotation_lr
    assert groups["xyz"]["params"][0] is m._xyz and groups["f_rest"]["params"][0] is m._features_rest
    assert all(g["eps"] == 1e-15 for g in m.optimizer.param_groups)
    lo, hi = opt.position_lr_init * 2.5, opt.position_lr_final * 2.5
    assert m.update_learning_rate(0) == pytest.approx(lo)
    assert m.update_learning_rate(opt.position_lr_max_steps) == pytest.approx(hi)
    assert m.update_learning_rate(10 ** 7) == pytest.approx(hi)
    assert m.update_learning_rate(opt.position_lr_max_steps // 2) == pytest.approx(math.sqrt(lo * hi))
    assert groups["xyz"]["lr"] == pytest.approx(math.sqrt(lo * hi))
    # delayed variant: damped by lr_delay_mult at step 0, full rate after the delay
    f = get_expon_lr_func(1.0, 0.01, lr_delay_steps=100, lr_delay_mult=0.1, max_steps=1000)
    assert f(0) == pytest.approx(0.1) and f(100) == pytest.approx(0.01 ** 0.1) and f(-1) == 0.0


def _hand_model() -> GaussianModel:
    """A: small + high grad (clone); B: large + high grad (split); C: low grad; D: transparent; E: huge."""
    xyz = torch.tensor([[0.0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0], [4, 0, 0]])
    scale = torch.tensor([0.005, 0.05, 0.005, 0.005, 0.2]).log()[:, None].repeat(1, 3)
    opacity = torch.logit(torch.tensor([0.5, 0.6, 0.7, 0.001, 0.8]))[:, None]
    n = 5
    m = GaussianModel.from_tensors(xyz, torch.arange(n * 3.0).reshape(n, 1, 3),
                                   torch.arange(n * 45.0).reshape(n, 15, 3), scale,
                                   torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1), opacity)
    return m


def _set_grads(m: GaussianModel) -> None:
    # view 1: A 3e-3 (x, y; z is ignored), B 1e-3, C 1e-5; view 2: A 0, B 1e-3. D, E never visible.
    g1 = torch.tensor([[3e-3 * 0.6, 3e-3 * 0.8, 5.0], [1e-3, 0, 0], [0, 1e-5, 0], [0, 0, 0], [0, 0, 0]])
    m.add_densification_stats(g1, torch.tensor([True, True, True, False, False]))
    g2 = torch.tensor([[0, 0, 0], [0, 1e-3, 0], [9, 9, 9], [9, 9, 9], [9, 9, 9]])
    m.add_densification_stats(g2, torch.tensor([True, True, False, False, False]))


def test_densification_stats():
    m = _hand_model()
    m.training_setup(OptimizationParams())
    _set_grads(m)
    torch.testing.assert_close(m.xyz_gradient_accum[:, 0], torch.tensor([3e-3, 2e-3, 1e-5, 0, 0]))
    torch.testing.assert_close(m.denom[:, 0], torch.tensor([2.0, 2, 1, 0, 0]))
    m.update_max_radii(torch.tensor([3, 5, 7, 9, 11], dtype=torch.int32), torch.tensor([1, 1, 0, 0, 1]).bool())
    m.update_max_radii(torch.tensor([4, 2, 7, 9, 1], dtype=torch.int32), torch.tensor([1, 1, 1, 0, 1]).bool())
    torch.testing.assert_close(m.max_radii2D, torch.tensor([4.0, 5, 7, 0, 11]))


@pytest.mark.parametrize("max_screen_size", [None, 20])
def test_densify_and_prune_counts_and_adam_alignment(max_screen_size):
    m = _hand_model()
    opt = OptimizationParams()  # percent_dense 0.01
    m.training_setup(opt)
    _fake_step(m, seed=0)
    before = {g["name"]: (g["params"][0].detach().clone(), m.optimizer.state[g["params"][0]]["exp_avg"].clone(),
                          m.optimizer.state[g["params"][0]]["exp_avg_sq"].clone())
              for g in m.optimizer.param_groups}
    _set_grads(m)
    gen = torch.Generator().manual_seed(0)
    stats = m.densify_and_prune(max_grad=0.0002, min_opacity=0.005, extent=1.0, max_screen_size=max_screen_size,
                                generator=gen)
    # clone A (+1), split B (+2 -1), prune D (-1), and E (too big in world) only with max_screen_size
    expect_n = 5 + 1 + 2 - 1 - 1 - (1 if max_screen_size else 0)
    assert stats == {"cloned": 1, "split": 1, "pruned": 1 + (1 if max_screen_size else 0), "total": expect_n}
    assert len(m) == expect_n
    # order after Inria's surgery: kept originals [A, C, (E)], clone A', split children B1, B2
    kept = [0, 2] + ([] if max_screen_size else [4])
    n_kept = len(kept)
    xyz0 = before["xyz"][0]
    torch.testing.assert_close(m.get_xyz[:n_kept], xyz0[kept], rtol=0, atol=0)
    torch.testing.assert_close(m.get_xyz[n_kept], xyz0[0], rtol=0, atol=0)  # clone in place
    torch.testing.assert_close(m._scaling[n_kept], before["scaling"][0][0], rtol=0, atol=0)
    children = m.get_xyz[n_kept + 1:]
    assert children.shape == (2, 3)
    assert torch.all((children - xyz0[1]).abs() < 5 * 0.05)  # samples from B (std 0.05 in B's frame)
    assert not torch.equal(children[0], children[1])
    b_scale = before["scaling"][0][1].exp()
    torch.testing.assert_close(m.get_scaling[n_kept + 1:], (b_scale / 1.6).expand(2, 3), rtol=1e-6, atol=0)
    torch.testing.assert_close(m._features_rest[n_kept + 1:], before["f_rest"][0][1].expand(2, 15, 3))
    torch.testing.assert_close(m._opacity[n_kept + 1:], before["opacity"][0][1].expand(2, 1))
    # Adam state follows the rows: originals keep their moments, new rows start at zero
    for g in m.optimizer.param_groups:
        p = g["params"][0]
        assert p is getattr(m, {"xyz": "_xyz", "f_dc": "_features_dc", "f_rest": "_features_rest",
                                "opacity": "_opacity", "scaling": "_scaling", "rotation": "_rotation"}[g["name"]])
        st = m.optimizer.state[p]
        assert st["exp_avg"].shape == p.shape and st["exp_avg_sq"].shape == p.shape
        _, avg0, sq0 = before[g["name"]]
        torch.testing.assert_close(st["exp_avg"][:n_kept], avg0[kept], rtol=0, atol=0)
        torch.testing.assert_close(st["exp_avg_sq"][:n_kept], sq0[kept], rtol=0, atol=0)
        assert not st["exp_avg"][n_kept:].any() and not st["exp_avg_sq"][n_kept:].any()
    assert len(m.optimizer.state) == 6
    # statistics were reset to the new size, and training continues
    assert m.xyz_gradient_accum.shape == (expect_n, 1) and m.denom.shape == (expect_n, 1)
    assert m.max_radii2D.shape == (expect_n,)
    _fake_step(m, seed=1)


def test_screen_space_prune_matches_inria_quirk():
    """Inria zeroes max_radii2D in densification_postfix, so a huge screen radius alone prunes nothing."""
    m = _hand_model()
    m.training_setup(OptimizationParams())
    m.max_radii2D[2] = 1000.0
    stats = m.densify_and_prune(0.0002, 0.005, extent=100.0, max_screen_size=20)
    assert stats["pruned"] == 1 and len(m) == 4  # only D (transparent); E is small relative to extent 100


def test_reset_opacity():
    m = _hand_model()
    m.training_setup(OptimizationParams())
    _fake_step(m, seed=3)
    op_before = m.get_opacity.detach().clone()
    xyz_state = m.optimizer.state[m._xyz]["exp_avg"].clone()
    m.reset_opacity()
    torch.testing.assert_close(m.get_opacity, torch.clamp_max(op_before, 0.01), rtol=1e-4, atol=1e-7)
    assert m.optimizer.param_groups[3]["params"][0] is m._opacity
    assert not m.optimizer.state[m._opacity]["exp_avg"].any()
    torch.testing.assert_close(m.optimizer.state[m._xyz]["exp_avg"], xyz_state, rtol=0, atol=0)
    _fake_step(m, seed=4)


def test_capture_restore_round_trip(tmp_path):
    opt = OptimizationParams()
    m = _model(30, degree=3)
    m.spatial_lr_scale = 1.7
    m.training_setup(opt)
    m.active_sh_degree = 2
    for i in range(3):
        _fake_step(m, seed=10 + i)
    m.add_densification_stats(torch.rand(30, 3), torch.rand(30) > 0.3)
    m.max_radii2D[:5] = 7.0
    path = tmp_path / "chkpnt.pth"
    torch.save((m.capture(), 3), path)
    state, it = torch.load(path, weights_only=True)  # tensors, numbers and dicts only
    assert it == 3
    r = GaussianModel(3)
    r.restore(state, opt)
    assert r.active_sh_degree == 2 and r.max_sh_degree == 3 and r.spatial_lr_scale == 1.7
    for name in ("_xyz", "_features_dc", "_features_rest", "_scaling", "_rotation", "_opacity", "max_radii2D",
                 "xyz_gradient_accum", "denom"):
        torch.testing.assert_close(getattr(r, name), getattr(m, name), rtol=0, atol=0, msg=name)
    for gm, gr in zip(m.optimizer.param_groups, r.optimizer.param_groups):
        assert gm["name"] == gr["name"] and gm["lr"] == gr["lr"]
        sm, sr = m.optimizer.state[gm["params"][0]], r.optimizer.state[gr["params"][0]]
        for key in ("exp_avg", "exp_avg_sq", "step"):
            torch.testing.assert_close(sr[key], sm[key], rtol=0, atol=0)
    # the next step is identical
    _fake_step(m, seed=99)
    _fake_step(r, seed=99)
    torch.testing.assert_close(r._xyz, m._xyz, rtol=0, atol=0)
    torch.testing.assert_close(r._features_rest, m._features_rest, rtol=0, atol=0)


def test_restore_inria_tuple():
    opt = OptimizationParams()
    m = _model(6, degree=1)
    m.training_setup(opt)
    _fake_step(m, seed=0)
    c = m.capture()
    inria = (c["active_sh_degree"], c["xyz"], c["features_dc"], c["features_rest"], c["scaling"], c["rotation"],
             c["opacity"], c["max_radii2D"], c["xyz_gradient_accum"], c["denom"], c["optimizer"],
             c["spatial_lr_scale"])
    r = GaussianModel(3)
    r.restore(inria, opt)
    assert r.max_sh_degree == 1
    torch.testing.assert_close(r._rotation, m._rotation, rtol=0, atol=0)
