"""The native CPU rasterizer against the independent dense reference, finite differences and its own contract.

Tolerances (../shared/NOTES.md): two correct implementations differ by ~4e-4 per pixel (the 1/255 cut can flip
under different exp rounding) and ~4e-3 relative in gradients.
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from gaussian_renderer import BackendUnavailable, available_backends, render, resolve_backend
from gaussian_renderer.rasterization import rasterize
from scene.cameras import Camera

IMAGE_ATOL = 5e-4
GRAD_RTOL = 4e-3


@dataclass
class Model:
    """Inria-style parameters with activations, so gradients reach the raw (optimised) tensors."""

    xyz: Tensor            # [N, 3]
    log_scale: Tensor      # [N, 3]
    rot: Tensor            # [N, 4] unnormalised wxyz
    opacity_logit: Tensor  # [N, 1]
    f_dc: Tensor           # [N, 1, 3]
    f_rest: Tensor         # [N, 15, 3]
    active_sh_degree: int = 3

    @property
    def get_xyz(self) -> Tensor:
        return self.xyz

    @property
    def get_scaling(self) -> Tensor:
        return torch.exp(self.log_scale)

    @property
    def get_rotation(self) -> Tensor:
        return F.normalize(self.rot, dim=-1)

    @property
    def get_opacity(self) -> Tensor:
        return torch.sigmoid(self.opacity_logit)

    @property
    def get_features(self) -> Tensor:
        return torch.cat([self.f_dc, self.f_rest], 1)

    def params(self) -> list[Tensor]:
        return [self.xyz, self.log_scale, self.rot, self.opacity_logit, self.f_dc, self.f_rest]

    def fresh(self) -> "Model":
        """Detached copy whose parameters require grad."""
        return Model(*(p.detach().clone().requires_grad_(True) for p in self.params()), self.active_sh_degree)


PARAM_NAMES = ["means", "scales", "rotations", "opacities", "sh_dc", "sh_rest"]


def _rotation(g: torch.Generator) -> np.ndarray:
    a = (torch.rand(3, generator=g) - 0.5).double().numpy() * 0.6
    cx, cy, cz, sx, sy, sz = np.cos(a[0]), np.cos(a[1]), np.cos(a[2]), np.sin(a[0]), np.sin(a[1]), np.sin(a[2])
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def make_scene(seed: int, n: int, width: int, height: int, *, principal: tuple[float, float] | None = None,
               tiny_huge: bool = True, behind: bool = True, cluster: bool = False) -> tuple[Camera, Model]:
    """Random Gaussians seen by a rotated camera: anisotropic, overlapping, partly off-screen, some behind the
    near plane, a few tiny and huge ones; opacities up to 0.995 so the 0.99 clamp is exercised."""
    g = torch.Generator().manual_seed(seed)
    f = 0.9 * max(width, height)
    cx, cy = principal if principal is not None else (0.5 * width, 0.5 * height)
    R = _rotation(g)
    t = (torch.rand(3, generator=g).double().numpy() - 0.5)
    w2c = np.eye(4)
    w2c[:3, :3], w2c[:3, 3] = R, t
    cam = Camera(uid=0, image_name=f"s{seed}", width=width, height=height, fx=f, fy=f * 1.1, cx=cx, cy=cy,
                 world_to_camera=w2c)
    z = 1.0 + 6.0 * torch.rand(n, generator=g)
    if behind:
        z[: n // 10] = torch.rand(n // 10, generator=g) * 0.6 - 0.3  # around and behind the near plane
    spread = 1.4 if not cluster else 0.25
    xy = (torch.rand(n, 2, generator=g) - 0.5) * 2 * spread
    xy[:, 0] = xy[:, 0] * (0.5 * width / f) + (0.5 * width - cx) / f
    xy[:, 1] = xy[:, 1] * (0.5 * height / f) + (0.5 * height - cy) / f
    pc = torch.cat([xy * z[:, None], z[:, None]], 1).double().numpy()
    world = (pc - t) @ R  # R^T (pc - t)
    log_scale = torch.log(z.abs() + 0.5)[:, None] + math.log(0.02) + torch.randn(n, 3, generator=g) * 0.7
    if tiny_huge:
        log_scale[n // 10: n // 10 + 3] = math.log(1e-4)
        log_scale[n // 10 + 3: n // 10 + 5] = math.log(2.0)
    if cluster:
        log_scale = log_scale + 1.0
    opacity = 0.02 + 0.975 * torch.rand(n, 1, generator=g)
    opacity[n // 10 + 5: n // 10 + 15] = 0.999  # alpha above the 0.99 clamp near their centres
    log_scale[n // 10 + 5: n // 10 + 15] += 1.5
    model = Model(
        xyz=torch.tensor(world, dtype=torch.float32),
        log_scale=log_scale.float(),
        rot=torch.randn(n, 4, generator=g),
        opacity_logit=torch.logit(opacity),
        f_dc=torch.randn(n, 1, 3, generator=g) * 0.8,
        f_rest=torch.randn(n, 15, 3, generator=g) * 0.15,
    )
    return cam, model


SCENES = {
    "square": dict(seed=1, n=160, width=48, height=48),
    "wide_offcentre": dict(seed=2, n=200, width=61, height=37, principal=(20.3, 22.9)),
    "tall_cluster": dict(seed=3, n=150, width=35, height=53, cluster=True),
}


def _upstream(out: dict, seed: int, keys: tuple[str, ...] = ("render", "alpha", "depth")) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    loss = torch.zeros(())
    for key in keys:
        loss = loss + (out[key] * torch.randn(out[key].shape, generator=g, dtype=out[key].dtype)).sum()
    return loss


def _rel(a: Tensor, b: Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm().clamp_min(1e-12))


@pytest.mark.parametrize("name", list(SCENES))
def test_forward_matches_reference(name: str) -> None:
    cam, model = make_scene(**SCENES[name])
    bg = torch.tensor([0.2, 0.5, 0.9])
    with torch.no_grad():
        a = render(cam, model, bg, backend="cpu")
        b = render(cam, model, bg, backend="reference")
    assert a["render"].shape == (3, cam.height, cam.width)
    assert (a["radii"] == b["radii"]).all()
    assert int(a["visibility_filter"].sum()) > 20, "scene should show many Gaussians"
    torch.testing.assert_close(a["render"], b["render"], atol=IMAGE_ATOL, rtol=0)
    torch.testing.assert_close(a["alpha"], b["alpha"], atol=IMAGE_ATOL, rtol=0)
    zmax = float(b["depth"].max())
    torch.testing.assert_close(a["depth"], b["depth"], atol=IMAGE_ATOL * zmax, rtol=0)
    # the scene is not trivially empty, and some pixels saturate (the T < 1e-4 stop is reached in the cluster)
    assert float(a["alpha"].mean()) > 0.2
    if name == "tall_cluster":
        assert float(a["alpha"].max()) > 0.999


def test_near_plane_and_offscreen_are_culled() -> None:
    cam, model = make_scene(seed=4, n=120, width=40, height=30)
    pc = model.xyz.double() @ torch.tensor(cam.R).T + torch.tensor(cam.T)
    with torch.no_grad():
        out = render(cam, model, torch.zeros(3), backend="cpu")
    assert not out["visibility_filter"][pc[:, 2] <= 0.2].any()
    uv, _ = cam.project(model.xyz.double().numpy())
    far = torch.tensor((np.abs(uv[:, 0] - 20) > 400) & (pc[:, 2].numpy() > 0.2))
    assert not out["visibility_filter"][far & (model.get_scaling.max(1).values < 0.1)].any()
    assert out["radii"].dtype == torch.int32


@pytest.mark.parametrize("channels", [1, 64])
def test_override_channels_match_reference(channels: int) -> None:
    cam, model = make_scene(seed=5, n=140, width=40, height=33, principal=(25.0, 11.0))
    g = torch.Generator().manual_seed(6)
    colors = torch.rand(140, channels, generator=g) * 2 - 0.5  # signed features are allowed
    bg = torch.rand(channels, generator=g)
    with torch.no_grad():
        a = render(cam, model, bg, override_color=colors, backend="cpu")
        b = render(cam, model, bg, override_color=colors, backend="reference")
    assert a["render"].shape == (channels, cam.height, cam.width)
    torch.testing.assert_close(a["render"], b["render"], atol=IMAGE_ATOL * 2, rtol=0)


@pytest.mark.parametrize("name,keys", [("square", ("render", "alpha", "depth")),
                                       ("wide_offcentre", ("render", "alpha", "depth")),
                                       ("tall_cluster", ("render", "alpha", "depth")),
                                       ("square", ("render",))])  # training's case: depth has no gradient
def test_gradients_match_reference(name: str, keys: tuple[str, ...]) -> None:
    cam, base = make_scene(**SCENES[name])
    bg = torch.tensor([0.3, 0.1, 0.6])
    grads = {}
    for backend in ("cpu", "reference"):
        model = base.fresh()
        out = render(cam, model, bg, backend=backend)
        _upstream(out, seed=11, keys=keys).backward()
        grads[backend] = [p.grad for p in model.params()] + [out["viewspace_points"].grad]
    for pname, ga, gb in zip(PARAM_NAMES + ["viewspace"], grads["cpu"], grads["reference"]):
        assert torch.isfinite(ga).all(), pname
        assert gb.abs().max() > 0, pname
        assert _rel(ga, gb) < GRAD_RTOL, f"{pname}: relative error {_rel(ga, gb):.2e}"


def test_override_color_and_scaling_modifier_gradients() -> None:
    cam, base = make_scene(seed=7, n=120, width=37, height=29)
    colors0 = torch.rand(120, 5, generator=torch.Generator().manual_seed(8))
    grads = {}
    for backend in ("cpu", "reference"):
        model = base.fresh()
        colors = colors0.clone().requires_grad_(True)
        out = render(cam, model, torch.zeros(5), override_color=colors, scaling_modifier=0.7, backend=backend)
        _upstream(out, seed=12).backward()
        grads[backend] = [colors.grad, model.xyz.grad, model.log_scale.grad, model.opacity_logit.grad]
        assert model.f_dc.grad is None
    for ga, gb in zip(grads["cpu"], grads["reference"]):
        assert _rel(ga, gb) < GRAD_RTOL


def test_viewspace_points_are_ndc_scaled_mean2d_gradients() -> None:
    """vp.grad[:, :2] = dL/dmean2D * (W/2, H/2); dL/dmean2D taken from the composite op directly."""
    from gaussian_renderer.cpu import bin_gaussians, composite, project

    cam, model = make_scene(seed=9, n=100, width=44, height=30)
    colors = torch.rand(100, 3, generator=torch.Generator().manual_seed(3))
    out = render(cam, model, torch.zeros(3), override_color=colors, backend="cpu")
    g = torch.randn(out["render"].shape, generator=torch.Generator().manual_seed(4))
    (out["render"] * g).sum().backward()
    vp = out["viewspace_points"].grad

    with torch.no_grad():
        proj = project(model.get_xyz, model.get_rotation, model.get_scaling, cam.viewmat(), cam.K(), cam.width,
                       cam.height)
    m2 = proj.means2d.clone().requires_grad_(True)
    offsets, gids, _ = bin_gaussians(proj, model.get_opacity.detach(), cam.width, cam.height, 0)
    feats = torch.cat([colors, proj.depths[:, None]], 1)
    img, _ = composite(m2, proj.conics, model.get_opacity.detach().reshape(-1), feats, offsets, gids, cam.width,
                       cam.height)
    (img[:3] * g).sum().backward()
    expected = m2.grad * torch.tensor([0.5 * cam.width, 0.5 * cam.height])
    assert expected.abs().max() > 0
    torch.testing.assert_close(vp[:, :2], expected, rtol=1e-5, atol=1e-6)
    assert (vp[:, 2] == 0).all()


def _tiny_scene(dtype: torch.dtype) -> tuple[list[Tensor], Tensor, Tensor, int, int]:
    g = torch.Generator().manual_seed(21)
    n = 6
    means = torch.cat([(torch.rand(n, 2, generator=g) - 0.5) * 1.2, 2.5 + torch.rand(n, 1, generator=g)], 1)
    quats = torch.randn(n, 4, generator=g)
    scales = 0.08 + 0.15 * torch.rand(n, 3, generator=g)
    opac = 0.3 + 0.55 * torch.rand(n, generator=g)  # below the 0.99 clamp (finite differences see the clamp)
    colors = torch.rand(n, 2, generator=g)
    K = torch.tensor([[22.0, 0.0, 11.3], [0.0, 21.0, 8.6], [0.0, 0.0, 1.0]])
    return [t.to(dtype) for t in (means, quats, scales, opac, colors)], torch.eye(4), K, 24, 18


@pytest.mark.slow
def test_reference_float64_gradcheck() -> None:
    """The oracle itself: float64 autograd of the reference equals its finite differences."""
    params, viewmat, K, w, h = _tiny_scene(torch.float64)
    params = [p.requires_grad_(True) for p in params]
    bg = torch.tensor([0.3, 0.7], dtype=torch.float64)
    weights = torch.randn(4, h, w, generator=torch.Generator().manual_seed(5), dtype=torch.float64)

    def loss(*ps: Tensor) -> Tensor:
        out = rasterize(*ps, viewmat, K, w, h, bg, backend="reference")
        return ((out["render"] * weights[:2]).sum() + (out["alpha"] * weights[2]).sum()
                + (out["depth"] * weights[3]).sum())

    assert torch.autograd.gradcheck(loss, params, eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.slow
def test_native_gradients_match_float64_finite_differences() -> None:
    params64, viewmat, K, w, h = _tiny_scene(torch.float64)
    bg = torch.tensor([0.3, 0.7])
    weights = torch.randn(4, h, w, generator=torch.Generator().manual_seed(5))

    def loss(ps: list[Tensor], backend: str) -> Tensor:
        out = rasterize(*ps, viewmat, K, w, h, bg.to(ps[0].dtype), backend=backend)
        wt = weights.to(ps[0].dtype)
        return (out["render"] * wt[:2]).sum() + (out["alpha"] * wt[2]).sum() + (out["depth"] * wt[3]).sum()

    params = [p.float().requires_grad_(True) for p in params64]
    loss(params, "cpu").backward()
    eps = 1e-6
    for p32, p64 in zip(params, params64):
        fd = torch.zeros_like(p64)
        flat = fd.view(-1)
        for i in range(p64.numel()):
            plus, minus = p64.clone(), p64.clone()
            plus.view(-1)[i] += eps
            minus.view(-1)[i] -= eps
            lp = loss([plus if q is p64 else q for q in params64], "reference")
            lm = loss([minus if q is p64 else q for q in params64], "reference")
            flat[i] = (lp - lm) / (2 * eps)
        assert _rel(p32.grad.double(), fd) < 2e-3, f"relative error {_rel(p32.grad.double(), fd):.2e}"


def test_deterministic_and_thread_count_invariant() -> None:
    cam, base = make_scene(**SCENES["wide_offcentre"])
    results = []
    for threads in (1, 2, 2):
        model = base.fresh()
        out = render(cam, model, torch.tensor([0.1, 0.2, 0.3]), backend="cpu", num_threads=threads)
        _upstream(out, seed=13).backward()
        results.append([out["render"].detach(), out["alpha"].detach(), out["depth"].detach()]
                       + [p.grad for p in model.params()] + [out["viewspace_points"].grad])
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


def test_empty_view_renders_background() -> None:
    cam, model = make_scene(seed=14, n=30, width=20, height=20)
    model = model.fresh()
    with torch.no_grad():
        behind = cam.camera_center - 2.0 * cam.R[2]  # 2 units behind the camera (R[2] = optical axis)
        model.xyz[:] = torch.tensor(behind, dtype=torch.float32) + 0.1 * torch.randn(30, 3)
    bg = torch.tensor([0.25, 0.5, 0.75])
    out = render(cam, model, bg, backend="cpu")
    assert torch.equal(out["render"], bg[:, None, None].expand(3, 20, 20))
    assert (out["alpha"] == 0).all() and not out["visibility_filter"].any()
    out["render"].sum().backward()
    assert (model.xyz.grad == 0).all()


def test_unavailable_backend_error_is_one_line_with_install_command() -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA present: the CUDA backends may be available")
    cam, model = make_scene(seed=15, n=10, width=16, height=16)
    for backend, cmd in (("inria", "diff-gaussian-rasterization"), ("gsplat", "pip install gsplat")):
        with pytest.raises(BackendUnavailable) as info:
            render(cam, model, torch.zeros(3), backend=backend)
        assert isinstance(info.value, ImportError)
        msg = str(info.value)
        assert "\n" not in msg and "pip install" in msg and cmd in msg
    assert resolve_backend("auto", torch.device("cpu")) == "cpu"
    assert available_backends() == ["cpu", "reference"]
    with pytest.raises(ValueError, match="unknown rasterizer backend"):
        render(cam, model, torch.zeros(3), backend="opengl")


def test_build_lock_times_out_and_stale_torch_lock_is_removed(tmp_path: Path, monkeypatch) -> None:
    import fcntl

    from gaussian_renderer import native

    lock = tmp_path / "build.flock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(native.NativeBuildError, match="another process"):
            native._acquire(lock, timeout_s=0.3)
    finally:
        os.close(fd)

    # A torch lock file left by an interrupted build is removed instead of waiting forever.
    monkeypatch.setenv("GS_SEGMENT_CACHE", str(tmp_path / "cache"))
    directory = native.build_dir()
    directory.mkdir(parents=True)
    (directory / "lock").write_text("")
    seen = {}

    def fake_load(name: str, build_directory: str, **_: object) -> None:
        seen["lock_present"] = (Path(build_directory) / "lock").exists()
        (Path(build_directory) / f"{name}.so").write_bytes(b"")

    from torch.utils import cpp_extension

    monkeypatch.setattr(cpp_extension, "load", fake_load)
    lib = native.build()
    assert lib.exists() and seen == {"lock_present": False}


@pytest.mark.slow
def test_failed_build_reports_compiler_error(tmp_path: Path) -> None:
    from gaussian_renderer import native

    src = tmp_path / "src"
    src.mkdir()
    (src / "rasterizer.cpp").write_text("int broken( { return 0; }\n")
    for other in (*native.SOURCES, *native.HEADERS):   # every file of the build, so the build reaches the compiler
        if other != "rasterizer.cpp":
            (src / other).write_text("\n")
    code = ("import gaussian_renderer.native as n, pathlib, sys\n"
            f"n.SOURCE_DIR = pathlib.Path({str(src)!r})\n"
            "try:\n    n.build()\nexcept n.NativeBuildError as e:\n    print('CAUGHT', e)\n")
    env = dict(os.environ, GS_SEGMENT_CACHE=str(tmp_path / "cache"))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300,
                         cwd=Path(__file__).resolve().parents[1])
    assert "CAUGHT" in res.stdout, res.stderr
    assert "error" in res.stdout and "rasterizer.cpp" in res.stdout


def test_alpha_clamp_gradient_is_passed_through() -> None:
    """Where o G > 0.99 Inria keeps d alpha / d(o G) = 1; the reference does the same, finite differences don't."""
    means = torch.tensor([[0.0, 0.0, 3.0], [0.1, 0.05, 4.0]])
    quats = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.9, 0.1, 0.2, 0.0]])
    scales = torch.tensor([[2.0, 1.6, 0.2], [0.5, 0.5, 0.5]])  # ~10 px: o G > 0.99 on ~9 pixels
    opac = torch.tensor([0.999, 0.7])
    colors = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    K = torch.tensor([[20.0, 0.0, 12.5], [0.0, 20.0, 10.5], [0.0, 0.0, 1.0]])  # front mean on pixel (12, 10)
    grads = {}
    for backend in ("cpu", "reference"):
        ps = [t.clone().requires_grad_(True) for t in (means, quats, scales, opac, colors)]
        out = rasterize(*ps, torch.eye(4), K, 24, 20, torch.zeros(2), backend=backend)
        if backend == "cpu":  # the front Gaussian alone is clamped to 0.99 at its centre pixel
            solo = rasterize(means[:1], quats[:1], scales[:1], opac[:1], colors[:1], torch.eye(4), K, 24, 20,
                             torch.zeros(2), backend="cpu")
            assert float(solo["alpha"].detach()[0, 10, 12]) == pytest.approx(0.99, abs=1e-6)
        g = torch.randn(out["render"].shape, generator=torch.Generator().manual_seed(0))
        ((out["render"] * g).sum() + out["alpha"].sum()).backward()
        grads[backend] = [p.grad for p in ps]
    for ga, gb in zip(grads["cpu"], grads["reference"]):
        torch.testing.assert_close(ga, gb, rtol=2e-3, atol=1e-5)


def test_channels_without_upstream_gradient_are_left_out_exactly() -> None:
    """Upstream on channels 0 and 2 of 5 only: the backward runs on the first 3 (channel 1 included, its
    gradient is genuine), channels 3-4 get exact zeros, and everything matches the dense reference."""
    cam, base = make_scene(seed=5, n=120, width=40, height=32)
    colors0 = torch.rand(120, 5, generator=torch.Generator().manual_seed(6))
    up = torch.randn(5, 32, 40, generator=torch.Generator().manual_seed(7))
    up[[1, 3, 4]] = 0.0
    grads = {}
    for backend in ("cpu", "reference"):
        model = base.fresh()
        colors = colors0.clone().requires_grad_(True)
        out = render(cam, model, torch.zeros(5), override_color=colors, backend=backend)
        (out["render"] * up).sum().backward()
        grads[backend] = [colors.grad, model.xyz.grad, model.opacity_logit.grad]
    assert torch.equal(grads["cpu"][0][:, 3:], torch.zeros(120, 2))
    assert grads["cpu"][0][:, 2].abs().max() > 0
    for ga, gb in zip(grads["cpu"], grads["reference"]):
        assert _rel(ga, gb) < GRAD_RTOL
