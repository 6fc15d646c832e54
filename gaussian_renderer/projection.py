"""Per-Gaussian stage in plain torch (autograd does its backward): 3D covariance, EWA projection, conic, radius.

The CPU backend runs the same computation natively (gaussian_renderer.cpu.project, projection.cpp) for float32;
this version serves other dtypes (float64 gradchecks) and is the reference the native one is tested against.

Inria's conventions (see ../shared/NOTES.md): x/z and y/z are clamped to 1.3 x the half field of view before
building the Jacobian (here with asymmetric limits for an off-centre principal point, gsplat's form, which
reduces to Inria's 1.3 tan(fov/2) for a centred one), the 2D covariance is dilated by 0.3 px^2, the radius is
ceil(3 sqrt(lambda_max)) with Inria's max(0.1, .) guard, Gaussians with z <= near are culled, and
means2d = fx x/z + cx - 0.5 (Inria's integer-centred pixel frame: pixel (i, j) is evaluated at (i, j)).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Projected:
    """Screen-space Gaussians for one camera (culled ones have radius 0 and harmless finite values)."""

    means2d: Tensor  # [N, 2] pixel frame of the rasterizer
    conics: Tensor   # [N, 3] (a, b, c) of the inverse 2D covariance [[a, b], [b, c]]
    depths: Tensor   # [N] camera-space z
    radii: Tensor    # [N] int32, 0 = culled (z <= near); the tile test may zero more later


def intrinsics(K: Tensor) -> tuple[float, float, float, float]:  # K: [3, 3]
    k = K.detach().double().cpu()
    return float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2])


def fov_limits(width: int, height: int, fx: float, fy: float, cx: float, cy: float) -> tuple[float, ...]:
    """Clamp limits for x/z and y/z: (neg_x, pos_x, neg_y, pos_y), all positive. 1.3 tan(fov/2) when centred."""
    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
    return (cx / fx + 0.3 * tan_x, (width - cx) / fx + 0.3 * tan_x,
            cy / fy + 0.3 * tan_y, (height - cy) / fy + 0.3 * tan_y)


def radius_from_cov2d(a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    """Inria's ceil(3 sqrt(lambda_max)) of the dilated 2D covariance [[a, b], [b, c]] (float tensor)."""
    det = a * c - b * b
    mid = 0.5 * (a + c)
    lam = mid + torch.sqrt(torch.clamp_min(mid * mid - det, 0.1))
    return torch.ceil(3.0 * torch.sqrt(lam)).clamp_max(float(1 << 24))


def project_gaussians(
    means: Tensor,    # [N, 3] world
    quats: Tensor,    # [N, 4] wxyz, any norm
    scales: Tensor,   # [N, 3] activated
    viewmat: Tensor,  # [4, 4] world-to-camera, OpenCV axes (treated as a constant: no camera gradients)
    K: Tensor,        # [3, 3] pinhole intrinsics, COLMAP pixel-centre convention
    width: int,
    height: int,
    near: float = 0.2,
) -> Projected:
    """Written per component on [N] tensors: small-matrix bmm's and reductions over size-3 dims are slow in
    torch on the CPU, elementwise ops on [N] are not (forward and autograd backward alike)."""
    fx, fy, cx, cy = intrinsics(K)
    lim_nx, lim_px, lim_ny, lim_py = fov_limits(width, height, fx, fy, cx, cy)
    V = viewmat.detach().double().cpu().tolist()
    Wm = viewmat[:3, :3].to(means.dtype)
    p = means @ Wm.T + viewmat[:3, 3].to(means.dtype)
    x, y, z = p.unbind(-1)
    valid = z > near
    z = torch.where(valid, z, torch.ones_like(z))  # culled ones: finite values, zero gradients
    x = torch.where(valid, x, torch.zeros_like(x))
    y = torch.where(valid, y, torch.zeros_like(y))
    inv_z = 1.0 / z
    # J W: J (2x3) at the view direction clamped to the frustum margin
    sx = torch.clamp(x * inv_z, -lim_nx, lim_px)
    sy = torch.clamp(y * inv_z, -lim_ny, lim_py)
    fxz, fyz = fx * inv_z, fy * inv_z
    j0 = [fxz * (V[0][k] - sx * V[2][k]) for k in range(3)]
    j1 = [fyz * (V[1][k] - sy * V[2][k]) for k in range(3)]
    # rotation matrix of the normalised quaternion
    qw, qx, qy, qz = quats.unbind(-1)
    inv_n = torch.rsqrt(qw * qw + qx * qx + qy * qy + qz * qz)
    qw, qx, qy, qz = qw * inv_n, qx * inv_n, qy * inv_n, qz * inv_n
    xx, yy, zz = qx * qx, qy * qy, qz * qz
    xy, xz, yz = qx * qy, qx * qz, qy * qz
    wx, wy, wz = qw * qx, qw * qy, qw * qz
    R = [[1 - 2 * (yy + zz), 2 * (xy - wz), 2 * (xz + wy)],
         [2 * (xy + wz), 1 - 2 * (xx + zz), 2 * (yz - wx)],
         [2 * (xz - wy), 2 * (yz + wx), 1 - 2 * (xx + yy)]]
    s = scales.unbind(-1)
    # rows of J W R diag(s); cov2d = U U^T
    u0 = [(j0[0] * R[0][k] + j0[1] * R[1][k] + j0[2] * R[2][k]) * s[k] for k in range(3)]
    u1 = [(j1[0] * R[0][k] + j1[1] * R[1][k] + j1[2] * R[2][k]) * s[k] for k in range(3)]
    a = u0[0] * u0[0] + u0[1] * u0[1] + u0[2] * u0[2] + 0.3
    b = u0[0] * u1[0] + u0[1] * u1[1] + u0[2] * u1[2]
    c = u1[0] * u1[0] + u1[1] * u1[1] + u1[2] * u1[2] + 0.3
    inv_det = 1.0 / (a * c - b * b)
    conics = torch.stack([c * inv_det, -b * inv_det, a * inv_det], -1)
    means2d = torch.stack([fx * x * inv_z + (cx - 0.5), fy * y * inv_z + (cy - 0.5)], -1)
    with torch.no_grad():
        radius = radius_from_cov2d(a, b, c)
        ok = valid & torch.isfinite(radius) & torch.isfinite(means2d).all(-1) & (inv_det > 0)
        radii = torch.where(ok, radius, torch.zeros_like(radius)).to(torch.int32)
    return Projected(means2d=means2d, conics=conics, depths=p[:, 2], radii=radii)
