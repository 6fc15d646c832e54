"""Dense PyTorch reference rasterizer: the test oracle (small images only).

Written independently of projection.py / the C++ kernels: rotations by quaternion products, the 2D covariance
as a sum of projected scaled axes, means through K, conics by torch.linalg.inv, and compositing as a
[pixels x Gaussians] tensor with cumulative products. Same semantics (Inria's): tile-rect restriction, power > 0
and alpha < 1/255 skips, alpha = min(0.99, o G) with the clamp passed straight through in the backward, stop
before T would drop below 1e-4. Works in float32 or float64 (the dtype of ``means``); pixel chunks are
checkpointed so memory stays bounded, but time grows with pixels x Gaussians.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

TILE = 16
CHUNK_ELEMENTS = 1 << 19  # pixels x Gaussians per checkpointed chunk (~20 temporaries of this size)


def _qmul(p: Tensor, q: Tensor) -> Tensor:  # [..., 4] wxyz Hamilton product
    pw, px, py, pz = p.unbind(-1)
    qw, qx, qy, qz = q.unbind(-1)
    return torch.stack([pw * qw - px * qx - py * qy - pz * qz,
                        pw * qx + px * qw + py * qz - pz * qy,
                        pw * qy - px * qz + py * qw + pz * qx,
                        pw * qz + px * qy - py * qx + pz * qw], -1)


def _rotate(q: Tensor, v: Tensor) -> Tensor:  # q: [N, 4] unit, v: [N, 3] -> q v q*
    conj = q * torch.tensor([1.0, -1.0, -1.0, -1.0], dtype=q.dtype)
    v4 = torch.cat([torch.zeros_like(v[:, :1]), v], -1)
    return _qmul(_qmul(q, v4), conj)[:, 1:]


def _project(means: Tensor, quats: Tensor, scales: Tensor, viewmat: Tensor, K: Tensor, width: int, height: int,
             near: float) -> tuple[Tensor, ...]:
    dt = means.dtype
    Kd = K.to(dt)
    Rv, tv = viewmat[:3, :3].to(dt), viewmat[:3, 3].to(dt)
    fx, fy, cx, cy = (float(v) for v in (K[0, 0], K[1, 1], K[0, 2], K[1, 2]))
    pc = torch.einsum("ij,nj->ni", Rv, means) + tv
    keep = pc[:, 2] > near
    pc = torch.where(keep[:, None], pc, torch.tensor([0.0, 0.0, 1.0], dtype=dt))
    uvw = pc @ Kd.T
    means2d = uvw[:, :2] / uvw[:, 2:3] - 0.5
    # Jacobian at the view-frustum-clamped direction (limits from the principal point, 1.3 x half-fov margin)
    lo = torch.tensor([cx / fx + 0.15 * width / fx, cy / fy + 0.15 * height / fy], dtype=dt)
    hi = torch.tensor([(width - cx) / fx + 0.15 * width / fx, (height - cy) / fy + 0.15 * height / fy], dtype=dt)
    z = pc[:, 2:3]
    slope = torch.maximum(torch.minimum(pc[:, :2] / z, hi), -lo)  # clamped x/z, y/z
    focal = torch.tensor([fx, fy], dtype=dt)
    q = quats / torch.linalg.vector_norm(quats, dim=-1, keepdim=True)
    cov = torch.zeros(means.shape[0], 2, 2, dtype=dt)
    for k in range(3):
        axis = torch.zeros_like(means)
        axis[:, k] = 1.0
        v = torch.einsum("ij,nj->ni", Rv, _rotate(q, axis) * scales[:, k:k + 1])  # camera-frame scaled axis
        u = focal * (v[:, :2] - slope * v[:, 2:3]) / z  # J v
        cov = cov + u[:, :, None] * u[:, None, :]
    cov = cov + 0.3 * torch.eye(2, dtype=dt)
    conic_m = torch.linalg.inv(cov)
    conics = torch.stack([conic_m[:, 0, 0], conic_m[:, 0, 1], conic_m[:, 1, 1]], -1)
    with torch.no_grad():
        a, b, c = cov[:, 0, 0].float(), cov[:, 0, 1].float(), cov[:, 1, 1].float()
        mid = 0.5 * (a + c)
        lam = mid + torch.sqrt(torch.clamp_min(mid * mid - (a * c - b * b), 0.1))
        radius = torch.ceil(3.0 * torch.sqrt(lam)).clamp_max(float(1 << 24))
        radius = torch.where(keep & torch.isfinite(radius), radius, torch.zeros_like(radius))
        # Tile rectangle [x0, x1) x [y0, y1) (Inria's getRect), empty -> culled
        gx, gy = math.ceil(width / TILE), math.ceil(height / TILE)
        m2 = means2d.detach().float()
        rx0 = torch.floor((m2[:, 0] - radius) / TILE).clamp(0, gx)
        ry0 = torch.floor((m2[:, 1] - radius) / TILE).clamp(0, gy)
        rx1 = torch.floor((m2[:, 0] + radius + TILE - 1) / TILE).clamp(0, gx)
        ry1 = torch.floor((m2[:, 1] + radius + TILE - 1) / TILE).clamp(0, gy)
        visible = (radius > 0) & (rx1 > rx0) & (ry1 > ry0)
        radii = torch.where(visible, radius, torch.zeros_like(radius)).to(torch.int32)
        rect = torch.stack([rx0, ry0, rx1, ry1], -1)
    return means2d, conics, pc[:, 2], radii, rect


def _chunk(pix: Tensor, tiles: Tensor, rect: Tensor, means2d: Tensor, conics: Tensor, opac: Tensor,
           feats: Tensor) -> tuple[Tensor, Tensor]:
    """Composite Gaussians (already depth-sorted) at pixels pix [P, 2] -> ([P, C], final T [P])."""
    d = means2d[None, :, :] - pix[:, None, :]
    dx, dy = d[..., 0], d[..., 1]
    a, b, c = conics[:, 0], conics[:, 1], conics[:, 2]
    power = -0.5 * (a * dx * dx + c * dy * dy) - b * dx * dy
    raw = opac * torch.exp(power)
    alpha = raw - (raw - 0.99).clamp_min(0).detach()  # min(0.99, raw), gradient passed through
    in_rect = ((tiles[:, None, 0] >= rect[None, :, 0]) & (tiles[:, None, 0] < rect[None, :, 2])
               & (tiles[:, None, 1] >= rect[None, :, 1]) & (tiles[:, None, 1] < rect[None, :, 3]))
    valid = in_rect & (power <= 0) & (alpha >= 1.0 / 255.0)
    a_valid = torch.where(valid, alpha, torch.zeros_like(alpha))
    t_incl = torch.cumprod(1.0 - a_valid, dim=1)
    contrib = valid & (t_incl >= 1e-4)  # T would drop below 1e-4 at the first failing one: stop there
    a_c = torch.where(contrib, alpha, torch.zeros_like(alpha))
    trans = torch.cumprod(1.0 - a_c, dim=1)
    t_before = torch.cat([torch.ones_like(trans[:, :1]), trans[:, :-1]], dim=1)
    weights = a_c * t_before
    return weights @ feats, trans[:, -1].clone()  # clone: a view would keep the [P, G] base alive


class _RecomputedChunk(torch.autograd.Function):
    """_chunk whose [P, G] intermediates are recomputed in the backward (torch's checkpoint kept ~1 GB per
    128^2 frame alive in its non-reentrant form, and its reentrant form rejects torch.autograd.grad)."""

    @staticmethod
    def forward(ctx, pix: Tensor, tiles: Tensor, rect: Tensor, means2d: Tensor, conics: Tensor,  # type: ignore[override]
                opac: Tensor, feats: Tensor) -> tuple[Tensor, Tensor]:
        ctx.save_for_backward(pix, tiles, rect, means2d, conics, opac, feats)
        with torch.no_grad():
            return _chunk(pix, tiles, rect, means2d, conics, opac, feats)

    @staticmethod
    def backward(ctx, g_out: Tensor, g_t: Tensor):  # type: ignore[override]
        pix, tiles, rect, *diff = ctx.saved_tensors
        inputs = [x.detach().requires_grad_(True) for x in diff]
        with torch.enable_grad():
            out, t = _chunk(pix, tiles, rect, *inputs)
            grads = torch.autograd.grad((out, t), inputs, (g_out, g_t), allow_unused=True)
        return (None, None, None) + tuple(grads)


def rasterize_reference(
    means: Tensor,       # [N, 3]
    quats: Tensor,       # [N, 4] wxyz
    scales: Tensor,      # [N, 3]
    opacities: Tensor,   # [N]
    colors: Tensor,      # [N, C]
    viewmat: Tensor,     # [4, 4]
    K: Tensor,           # [3, 3]
    width: int,
    height: int,
    background: Tensor,  # [C]
    near: float = 0.2,
) -> dict[str, Tensor]:
    dt = means.dtype
    means2d, conics, depths, radii, rect = _project(means, quats, scales, viewmat, K, width, height, near)
    vp = torch.zeros(means.shape[0], 3, dtype=dt, requires_grad=True)
    ndc_scale = torch.tensor([0.5 * width, 0.5 * height], dtype=dt)
    means2d = means2d + vp[:, :2] * ndc_scale
    ids = torch.nonzero(radii > 0).squeeze(1)
    ids = ids[torch.sort(depths.detach()[ids], stable=True).indices]
    feats = torch.cat([colors.to(dt), depths[:, None]], -1)[ids]
    nc = colors.shape[1]
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    pix = torch.stack([xs, ys], -1).reshape(-1, 2)
    tiles = (pix // TILE).float()
    pix = pix.to(dt)
    n_pix = pix.shape[0]
    if ids.numel() == 0:
        out = torch.zeros(n_pix, nc + 1, dtype=dt) + 0.0 * feats.sum()
        t_final = torch.ones(n_pix, dtype=dt)
    else:
        step = max(1, CHUNK_ELEMENTS // ids.numel())
        outs, ts = [], []
        args = (rect[ids], means2d[ids], conics[ids], opacities.to(dt)[ids], feats)
        for s in range(0, n_pix, step):
            o, t = _RecomputedChunk.apply(pix[s:s + step], tiles[s:s + step], *args)
            outs.append(o)
            ts.append(t)
        out, t_final = torch.cat(outs), torch.cat(ts)
    out = out.T.reshape(nc + 1, height, width)
    t_final = t_final.reshape(1, height, width)
    return {
        "render": out[:nc] + t_final * background.to(dt)[:, None, None],
        "alpha": 1.0 - t_final,
        "depth": out[nc:],
        "viewspace_points": vp,
        "visibility_filter": radii > 0,
        "radii": radii,
    }
