"""The native projection (gaussian_renderer.cpu.project) against the plain-torch projection run in float64.

The torch version is an independent formulation (elementwise ops, torch autograd for the backward); run in
float64 it is the ground truth for the float32 kernel. Tolerances: float32 rounding through ~30 dependent ops,
so 2e-5 relative on values and 1e-4 relative (norm over all Gaussians) on gradients.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from gaussian_renderer.cpu import project
from gaussian_renderer.projection import project_gaussians


def _scene(seed: int, n: int, width: int, height: int, cx: float, cy: float) -> tuple[Tensor, ...]:
    """Gaussians in front of, beside (beyond the 1.3 x FOV clamp) and behind a rotated camera."""
    g = torch.Generator().manual_seed(seed)
    f = 0.8 * width
    ang = (torch.rand(3, generator=g) - 0.5) * 0.8
    c, s = torch.cos(ang), torch.sin(ang)
    rx = torch.tensor([[1, 0, 0], [0, c[0], -s[0]], [0, s[0], c[0]]], dtype=torch.float64)
    ry = torch.tensor([[c[1], 0, s[1]], [0, 1, 0], [-s[1], 0, c[1]]], dtype=torch.float64)
    rz = torch.tensor([[c[2], -s[2], 0], [s[2], c[2], 0], [0, 0, 1]], dtype=torch.float64)
    view = torch.eye(4, dtype=torch.float64)
    view[:3, :3] = rz @ ry @ rx
    view[:3, 3] = (torch.rand(3, generator=g, dtype=torch.float64) - 0.5)
    K = torch.tensor([[f, 0, cx], [0, 1.1 * f, cy], [0, 0, 1]], dtype=torch.float64)
    z = 0.5 + 5 * torch.rand(n, generator=g, dtype=torch.float64)
    z[: n // 8] = torch.rand(n // 8, generator=g, dtype=torch.float64) * 0.5 - 0.2  # at / behind the near plane
    xy = (torch.rand(n, 2, generator=g, dtype=torch.float64) - 0.5) * 3.0 * z[:, None]  # many beyond the clamp
    cam_pts = torch.cat([xy, z[:, None]], 1)
    means = (cam_pts - view[:3, 3]) @ view[:3, :3]  # world = R^T (p - t)
    quats = torch.randn(n, 4, generator=g, dtype=torch.float64) * 2.0  # not normalised
    scales = torch.exp(torch.randn(n, 3, generator=g, dtype=torch.float64) * 0.8 - 3.0)
    return means, quats, scales, view, K


CASES = {
    "centred": dict(seed=0, n=600, width=64, height=48, cx=32.0, cy=24.0),
    "offcentre": dict(seed=1, n=600, width=61, height=37, cx=20.3, cy=22.9),
}


@pytest.mark.parametrize("name", list(CASES))
def test_native_projection_matches_float64_torch(name: str) -> None:
    case = CASES[name]
    means, quats, scales, view, K = _scene(**case)
    w, h = case["width"], case["height"]
    leaves64 = [t.clone().requires_grad_(True) for t in (means, quats, scales)]
    leaves32 = [t.float().clone().requires_grad_(True) for t in (means, quats, scales)]
    ref = project_gaussians(*leaves64, view, K, w, h)
    out = project(*leaves32, view.float(), K.float(), w, h, num_threads=2)

    valid = ref.radii > 0
    assert valid.sum() > 200 and (~valid).sum() > 50  # both visible and culled Gaussians are exercised
    assert torch.equal(out.radii > 0, valid)
    assert (out.radii != ref.radii).float().mean() < 0.01  # ceil() may flip at an exact integer
    for a, b in ((out.means2d, ref.means2d), (out.conics, ref.conics), (out.depths, ref.depths)):
        a, b = a.detach().double()[valid], b.detach()[valid]
        assert torch.allclose(a, b, rtol=2e-5, atol=1e-5 * float(b.abs().max())), float((a - b).abs().max())

    g = torch.Generator().manual_seed(7)
    ups = [torch.randn(t.shape, generator=g, dtype=torch.float64) for t in (ref.means2d, ref.conics, ref.depths)]
    ups[1] = ups[1] * 100.0  # conics are ~1e-2: weigh them like the means
    loss64 = sum((t * u).sum() for t, u in zip((ref.means2d, ref.conics, ref.depths), ups))
    loss32 = sum((t * u.float()).sum() for t, u in zip((out.means2d, out.conics, out.depths), ups))
    g64 = torch.autograd.grad(loss64, leaves64)
    g32 = torch.autograd.grad(loss32, leaves32)
    for nm, a, b in zip(("means", "quats", "scales"), g32, g64):
        rel = float((a.double() - b).norm() / b.norm())
        assert rel < 1e-4, (nm, rel)
        assert torch.isfinite(a).all(), nm


def test_native_projection_gradient_flows_only_where_torch_does() -> None:
    """Culled Gaussians: no gradient to the means from means2d (torch.where), yes to the depth; clamped x/z:
    none through the clamp (torch.clamp's rule), while means2d still pulls."""
    means = torch.tensor([[0.0, 0.0, 0.1], [50.0, 0.0, 2.0], [0.2, -0.1, 3.0]])  # culled, clamped, plain
    quats = torch.tensor([[1.0, 0.2, 0.0, 0.1]] * 3)
    scales = torch.full((3, 3), 0.05)
    view, K = torch.eye(4), torch.tensor([[50.0, 0, 32], [0, 50.0, 32], [0, 0, 1]])
    leaves = [t.clone().requires_grad_(True) for t in (means, quats, scales)]
    out = project(*leaves, view, K, 64, 64)
    (out.means2d.sum() + out.depths.sum()).backward()
    assert leaves[0].grad[0].tolist() == [0.0, 0.0, 1.0]  # culled: only d depth / dz
    leaves64 = [t.double().clone().requires_grad_(True) for t in (means, quats, scales)]
    ref = project_gaussians(*leaves64, view.double(), K.double(), 64, 64)
    (ref.conics.sum()).backward()
    leaves = [t.clone().requires_grad_(True) for t in (means, quats, scales)]
    project(*leaves, view, K, 64, 64).conics.sum().backward()
    for a, b in zip(leaves, leaves64):
        assert torch.allclose(a.grad.double(), b.grad, rtol=1e-4, atol=1e-6 * max(1.0, float(b.grad.abs().max())))
    assert math.isfinite(float(leaves[1].grad.abs().sum()))


def test_float64_inputs_take_the_torch_projection() -> None:
    means, quats, scales, view, K = _scene(3, 50, 32, 32, 16.0, 16.0)
    out = project(means, quats, scales, view, K, 32, 32)
    ref = project_gaussians(means, quats, scales, view, K, 32, 32)
    assert out.means2d.dtype == torch.float64 and torch.equal(out.means2d, ref.means2d)
