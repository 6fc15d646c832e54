"""Adapters to the CUDA rasterizers (Inria's diff_gaussian_rasterization, gsplat), imported only when chosen.

UNTESTED HERE: the development machines have no GPU. Both adapters follow the libraries' documented APIs and
return the same dict as the CPU backend. Known differences from the CPU backend: Inria's rasterizer assumes a
centred principal point for its 1.3 tan(fov) clamp (an off-centre cx, cy is honoured for the projection only);
gsplat uses its own conventions (pixel centres +0.5, 3-sigma radius per axis, alpha clamp 0.999).
"""
from __future__ import annotations

import torch
from torch import Tensor

from gaussian_renderer.projection import intrinsics


def _camera_z(means: Tensor, viewmat: Tensor) -> Tensor:  # [N]
    return means @ viewmat[2, :3].to(means.dtype) + viewmat[2, 3].to(means.dtype)


def _inria_projection(width: int, height: int, K: Tensor, znear: float = 0.01, zfar: float = 100.0) -> Tensor:
    """Inria's getProjectionMatrix (column-vector form) with the principal point folded in, so that Inria's
    ndc2Pix gives pixel = fx x/z + cx - 0.5 (equal to Inria's matrix when cx = W/2, cy = H/2)."""
    fx, fy, cx, cy = intrinsics(K)
    P = torch.zeros(4, 4)
    P[0, 0] = 2.0 * fx / width
    P[1, 1] = 2.0 * fy / height
    P[0, 2] = (2.0 * cx - width) / width
    P[1, 2] = (2.0 * cy - height) / height
    P[3, 2] = 1.0
    P[2, 2] = zfar / (zfar - znear)
    P[2, 3] = -(zfar * znear) / (zfar - znear)
    return P


def rasterize_inria(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor,
                    viewmat: Tensor, K: Tensor, width: int, height: int, background: Tensor,
                    near: float = 0.2) -> dict[str, Tensor]:
    """Inria's CUDA rasterizer; channels beyond 3 (and depth, alpha) are rendered in chunks of 3."""
    from diff_gaussian_rasterization import GaussianRasterizationSettings, GaussianRasterizer

    dev = means.device
    fx, fy, _, _ = intrinsics(K)
    world_view = viewmat.float().T.to(dev)  # Inria stores transposed matrices (row vectors)
    full_proj = world_view @ _inria_projection(width, height, K).T.to(dev)
    campos = torch.linalg.inv(viewmat.float())[:3, 3].to(dev)
    nc = colors.shape[1]
    ones = torch.ones_like(means[:, :1])
    feats = torch.cat([colors, _camera_z(means, viewmat)[:, None], ones], -1)  # + depth, alpha channels
    bg = torch.cat([background.to(dev, feats.dtype), torch.zeros(2, device=dev, dtype=feats.dtype)])
    pad = (-feats.shape[1]) % 3
    feats = torch.cat([feats, feats.new_zeros(feats.shape[0], pad)], -1)
    bg = torch.cat([bg, bg.new_zeros(pad)])
    vp = torch.zeros_like(means, requires_grad=True)  # Inria's means2D: receives the NDC-scaled gradient
    images: list[Tensor] = []
    radii = torch.zeros(0)
    for s in range(0, feats.shape[1], 3):
        kwargs = dict(image_height=height, image_width=width, tanfovx=0.5 * width / fx, tanfovy=0.5 * height / fy,
                      bg=bg[s:s + 3].contiguous(), scale_modifier=1.0, viewmatrix=world_view, projmatrix=full_proj,
                      sh_degree=0, campos=campos, prefiltered=False, debug=False)
        try:
            settings = GaussianRasterizationSettings(**kwargs, antialiasing=False)  # newer releases
        except TypeError:
            settings = GaussianRasterizationSettings(**kwargs)
        result = GaussianRasterizer(raster_settings=settings)(
            means3D=means, means2D=vp, shs=None, colors_precomp=feats[:, s:s + 3].contiguous(),
            opacities=opacities.reshape(-1, 1), scales=scales, rotations=quats / quats.norm(dim=-1, keepdim=True),
            cov3D_precomp=None)
        images.append(result[0])
        radii = result[1]
    image = torch.cat(images, 0)
    return {"render": image[:nc], "alpha": image[nc + 1:nc + 2], "depth": image[nc:nc + 1],
            "viewspace_points": vp, "visibility_filter": radii > 0, "radii": radii.int()}


def rasterize_gsplat(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor,
                     viewmat: Tensor, K: Tensor, width: int, height: int, background: Tensor,
                     near: float = 0.2) -> dict[str, Tensor]:
    """gsplat.rasterization; the screen-space gradient is copied (NDC-scaled) to viewspace_points by a hook."""
    from gsplat import rasterization

    dev = means.device
    nc = colors.shape[1]
    feats = torch.cat([colors, _camera_z(means, viewmat)[:, None]], -1)
    bg = torch.cat([background.to(dev, feats.dtype), torch.zeros(1, device=dev, dtype=feats.dtype)])
    out, alphas, meta = rasterization(means, quats, scales, opacities.reshape(-1), feats,
                                      viewmat.to(dev, means.dtype)[None], K.to(dev, means.dtype)[None], width,
                                      height, near_plane=near, backgrounds=bg[None], render_mode="RGB",
                                      packed=False)
    image = out[0].permute(2, 0, 1)  # [C+1, H, W]
    vp = torch.zeros_like(means, requires_grad=True)
    scale = torch.tensor([0.5 * width, 0.5 * height], device=dev, dtype=means.dtype)

    def _to_viewspace(grad: Tensor) -> None:  # grad: [1, N, 2] in pixels
        g = torch.zeros_like(vp)
        g[:, :2] = grad[0] * scale
        vp.grad = g if vp.grad is None else vp.grad + g

    means2d = meta["means2d"]
    if means2d.requires_grad:
        means2d.register_hook(_to_viewspace)
    radii = meta["radii"][0]
    if radii.dim() == 2:  # newer gsplat: per-axis radii
        radii = radii.max(dim=-1).values
    # the background was applied to depth too (0) and colour: depth channel holds sum z alpha T as required
    return {"render": image[:nc], "alpha": alphas[0].permute(2, 0, 1), "depth": image[nc:nc + 1],
            "viewspace_points": vp, "visibility_filter": radii > 0, "radii": radii.int()}

