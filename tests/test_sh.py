"""eval_sh (basis tensor x coefficients) against Inria's polynomial written term by term (the reference)."""
from __future__ import annotations

import pytest
import torch

from utils.sh import C0, C1, C2, C3, eval_sh


def inria_eval_sh(deg: int, sh: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """Inria's utils/sh_utils.py eval_sh, transcribed. sh: [..., C, K]; dirs: [..., 3]."""
    result = C0 * sh[..., 0]
    if deg > 0:
        x, y, z = dirs[..., 0:1], dirs[..., 1:2], dirs[..., 2:3]
        result = result - C1 * y * sh[..., 1] + C1 * z * sh[..., 2] - C1 * x * sh[..., 3]
        if deg > 1:
            xx, yy, zz = x * x, y * y, z * z
            xy, yz, xz = x * y, y * z, x * z
            result = (result + C2[0] * xy * sh[..., 4] + C2[1] * yz * sh[..., 5]
                      + C2[2] * (2.0 * zz - xx - yy) * sh[..., 6] + C2[3] * xz * sh[..., 7]
                      + C2[4] * (xx - yy) * sh[..., 8])
            if deg > 2:
                result = (result + C3[0] * y * (3 * xx - yy) * sh[..., 9] + C3[1] * xy * z * sh[..., 10]
                          + C3[2] * y * (4 * zz - xx - yy) * sh[..., 11]
                          + C3[3] * z * (2 * zz - 3 * xx - 3 * yy) * sh[..., 12]
                          + C3[4] * x * (4 * zz - xx - yy) * sh[..., 13]
                          + C3[5] * z * (xx - yy) * sh[..., 14] + C3[6] * x * (xx - 3 * yy) * sh[..., 15])
    return result


@pytest.mark.parametrize("deg", [0, 1, 2, 3])
def test_eval_sh_matches_inria_values_and_gradients(deg: int) -> None:
    g = torch.Generator().manual_seed(deg)
    sh = torch.randn(500, 3, 16, generator=g, dtype=torch.float64, requires_grad=True)
    dirs = torch.nn.functional.normalize(torch.randn(500, 3, generator=g, dtype=torch.float64), dim=1)
    dirs.requires_grad_(True)
    w = torch.randn(500, 3, generator=g, dtype=torch.float64)
    ours = eval_sh(deg, sh, dirs)
    ref = inria_eval_sh(deg, sh, dirs)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    g_ours = torch.autograd.grad((ours * w).sum(), (sh, dirs), allow_unused=True)
    g_ref = torch.autograd.grad((ref * w).sum(), (sh, dirs), allow_unused=True)  # degree 0 ignores dirs
    for a, b, x in zip(g_ours, g_ref, (sh, dirs)):
        a = torch.zeros_like(x) if a is None else a
        b = torch.zeros_like(x) if b is None else b
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    if deg < 3:  # coefficients above the active degree get no gradient
        assert g_ours[0][..., (deg + 1) ** 2:].abs().max() == 0


@pytest.mark.parametrize("deg,rest", [(0, 0), (1, 15), (2, 15), (3, 15), (2, 8)])
def test_native_sh_colors_match_inria_polynomial_in_float64(deg: int, rest: int) -> None:
    """The CPU extension's colour pass (normalise, SH, +0.5, clamp at 0) and its backward against the
    transcribed Inria polynomial run in float64 by torch autograd. Colours near 0 exercise the clamp."""
    from gaussian_renderer.cpu import sh_colors_native

    g = torch.Generator().manual_seed(10 + deg)
    n = 800
    means = torch.randn(n, 3, generator=g, dtype=torch.float64) * 2.0
    dc = torch.randn(n, 1, 3, generator=g, dtype=torch.float64) * 2.0
    rst = torch.randn(n, rest, 3, generator=g, dtype=torch.float64) * 0.5
    centre = [0.3, -0.2, 4.0]
    up = torch.randn(n, 3, generator=g, dtype=torch.float64)

    leaves64 = [t.clone().requires_grad_(True) for t in (means, dc, rst)]
    m, d, r = leaves64
    dirs = m - torch.tensor(centre, dtype=torch.float64)
    dirs = dirs / dirs.norm(dim=1, keepdim=True)
    sh = torch.cat([d, r], 1).transpose(1, 2)
    ref = torch.clamp_min(inria_eval_sh(deg, sh, dirs) + 0.5, 0.0)
    ref_grads = [torch.zeros_like(t) if gr is None else gr  # degree 0 does not depend on the direction
                 for t, gr in zip(leaves64, torch.autograd.grad((ref * up).sum(), leaves64, allow_unused=True))]

    leaves32 = [t.float().clone().requires_grad_(True) for t in (means, dc, rst)]
    ours = sh_colors_native(*leaves32, centre, deg, num_threads=2)
    our_grads = torch.autograd.grad((ours * up.float()).sum(), leaves32)

    assert (ref == 0).float().mean() > 0.02  # the clamp is active for part of the colours
    torch.testing.assert_close(ours.double(), ref, rtol=1e-5, atol=1e-5)
    for name, a, b in zip(("means", "dc", "rest"), our_grads, ref_grads):
        if not b.any():
            assert not a.any(), name
            continue
        rel = float((a.double() - b).norm() / b.norm().clamp_min(1e-30))
        assert rel < 1e-5, (name, rel)
    if rest:
        k = (deg + 1) ** 2 - 1
        assert torch.equal(our_grads[2][:, k:], torch.zeros_like(our_grads[2][:, k:]))  # inactive degrees


def test_render_uses_native_colours_only_for_the_cpu_backend() -> None:
    """render(backend='cpu') on a GaussianModel takes the native colour pass; the result equals the torch
    colours to float32 rounding, so the two paths are interchangeable."""
    import numpy as np

    from gaussian_renderer import sh_colors
    from scene.cameras import Camera
    from scene.gaussian_model import GaussianModel, random_point_cloud

    g = GaussianModel(3)
    g.create_from_pcd(random_point_cloud(np.array([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]), 300, seed=0), 2.0)
    g.active_sh_degree = 3
    with torch.no_grad():
        g._features_rest.normal_(0.0, 0.3)
    w2c = np.eye(4)
    w2c[2, 3] = 4.0
    cam = Camera(uid=0, image_name="c", width=32, height=32, fx=30.0, fy=30.0, cx=16.0, cy=16.0,
                 world_to_camera=w2c)
    native = sh_colors(cam, g, native=True)
    plain = sh_colors(cam, g)
    assert native.grad_fn is not None and "SHColors" in type(native.grad_fn).__name__
    torch.testing.assert_close(native, plain, rtol=1e-5, atol=1e-6)
