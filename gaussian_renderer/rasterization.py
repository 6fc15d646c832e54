"""The stateless low-level API: ``rasterize`` and ``vote_tensors`` over plain tensors, and backend selection.

Backends are reached lazily: nothing here imports native or CUDA code at module import time.
"""
from __future__ import annotations

import importlib.util
import torch
from torch import Tensor

from arguments import BACKENDS
_CUDA_PACKAGES = {"inria": "diff_gaussian_rasterization", "gsplat": "gsplat"}
_INSTALL = {
    "inria": "pip install --no-build-isolation git+https://github.com/graphdeco-inria/diff-gaussian-rasterization",
    "gsplat": "pip install gsplat",
}


class BackendUnavailable(ImportError):
    """A requested rasterizer backend cannot run here; the message names the install command."""


def _cuda_backend_ready(name: str) -> bool:
    return torch.cuda.is_available() and importlib.util.find_spec(_CUDA_PACKAGES[name]) is not None


def available_backends() -> list[str]:
    """Backends usable in this process ("cpu" compiles on first use and needs a C++ compiler)."""
    return ["cpu", "reference"] + [b for b in ("inria", "gsplat") if _cuda_backend_ready(b)]


def resolve_backend(backend: str, device: torch.device) -> str:
    """Turn "auto" into a concrete backend; raise BackendUnavailable for one that cannot run here."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown rasterizer backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        if device.type == "cuda":
            for name in ("inria", "gsplat"):
                if _cuda_backend_ready(name):
                    return name
        return "cpu"
    if backend in _CUDA_PACKAGES and not _cuda_backend_ready(backend):
        why = "CUDA is not available" if not torch.cuda.is_available() else f"{_CUDA_PACKAGES[backend]} is not installed"
        raise BackendUnavailable(f"rasterizer backend {backend!r} unavailable ({why}); install it with "
                                 f"`{_INSTALL[backend]}` on a CUDA machine, or use backend='cpu'")
    return backend


def rasterize(
    means: Tensor,       # [N, 3] world positions
    quats: Tensor,       # [N, 4] wxyz rotations (normalised inside)
    scales: Tensor,      # [N, 3] activated scales
    opacities: Tensor,   # [N] activated opacities
    colors: Tensor,      # [N, C] per-Gaussian colours / features, any C >= 1
    viewmat: Tensor,     # [4, 4] world-to-camera (OpenCV axes)
    K: Tensor,           # [3, 3] pinhole intrinsics (COLMAP pixel-centre convention)
    width: int,
    height: int,
    background: Tensor,  # [C]
    backend: str = "cpu",
    near: float = 0.2,
    num_threads: int = 0,
) -> dict[str, Tensor]:
    """Render one view with Inria's semantics. Returns the dict documented in CONTRACT.md:
    render [C, H, W], alpha [1, H, W], depth [1, H, W] (sum z alpha T), viewspace_points [N, 3],
    visibility_filter [N], radii [N] int32. Differentiable w.r.t. means, quats, scales, opacities, colors.
    """
    opacities = opacities.reshape(-1)  # [N] (an Inria-style [N, 1] is accepted too)
    if colors.dim() != 2 or colors.shape[0] != means.shape[0]:
        raise ValueError(f"colors must be [N, C] with N = {means.shape[0]}, got {tuple(colors.shape)}")
    if background.shape != (colors.shape[1],):
        raise ValueError(f"background must be [{colors.shape[1]}] to match colors, got {tuple(background.shape)}")
    backend = resolve_backend(backend, means.device)
    if backend == "reference":
        from gaussian_renderer.reference import rasterize_reference

        return rasterize_reference(means, quats, scales, opacities, colors, viewmat, K, width, height,
                                   background, near)
    if backend in ("inria", "gsplat"):
        from gaussian_renderer import cuda_backends

        fn = cuda_backends.rasterize_inria if backend == "inria" else cuda_backends.rasterize_gsplat
        return fn(means, quats, scales, opacities, colors, viewmat, K, width, height, background, near)
    return _rasterize_cpu(means, quats, scales, opacities, colors, viewmat, K, width, height, background, near,
                          num_threads)


def _rasterize_cpu(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor,
                   viewmat: Tensor, K: Tensor, width: int, height: int, background: Tensor, near: float,
                   num_threads: int) -> dict[str, Tensor]:
    from gaussian_renderer.cpu import bin_gaussians, composite, project

    if means.device.type != "cpu":
        raise ValueError(f"backend 'cpu' needs CPU tensors, got {means.device}; use backend='auto' or move them")
    proj = project(means, quats, scales, viewmat, K, width, height, near, num_threads)
    offsets, gids, radii = bin_gaussians(proj, width, height, num_threads)
    vp = torch.zeros(means.shape[0], 3, dtype=means.dtype, requires_grad=True)
    means2d = proj.means2d + vp[:, :2] * torch.tensor([0.5 * width, 0.5 * height], dtype=means.dtype)
    nc = colors.shape[1]
    feats = torch.cat([colors.to(proj.means2d.dtype), proj.depths[:, None]], -1)
    out, t_final = composite(means2d, proj.conics, opacities, feats, offsets, gids, width, height, num_threads)
    t_final = t_final[None]
    return {
        "render": out[:nc] + t_final * background.to(out.dtype)[:, None, None],
        "alpha": 1.0 - t_final,
        "depth": out[nc:],
        "viewspace_points": vp,
        "visibility_filter": radii > 0,
        "radii": radii,
    }


def vote_tensors(
    means: Tensor,      # [N, 3]
    quats: Tensor,      # [N, 4] wxyz
    scales: Tensor,     # [N, 3]
    opacities: Tensor,  # [N]
    viewmat: Tensor,    # [4, 4]
    K: Tensor,          # [3, 3]
    weights: Tensor,    # [H, W, K] signed per-pixel weights
    backend: str = "cpu",
    near: float = 0.2,
    num_threads: int = 0,
) -> Tensor:            # [N, K]
    """votes[n, k] = sum_p alpha_n(p) T_n(p) weights[p, k] (forward only, no autograd).

    The cpu backend runs one front-to-back pass; the others take the gradient of
    (render(override_color=x) * weights).sum() w.r.t. x, which is the same quantity.
    """
    height, width, nk = weights.shape
    opacities = opacities.reshape(-1)
    backend = resolve_backend(backend, means.device)
    if backend == "cpu":
        from gaussian_renderer.cpu import project, vote_native

        if means.device.type != "cpu":
            raise ValueError(f"backend 'cpu' needs CPU tensors, got {means.device}")
        with torch.no_grad():
            proj = project(means.detach(), quats.detach(), scales.detach(), viewmat, K, width, height, near,
                           num_threads)
            return vote_native(proj, opacities.detach(), weights, width, height, num_threads)
    with torch.enable_grad():
        x = torch.zeros(means.shape[0], nk, dtype=means.dtype, device=means.device, requires_grad=True)
        out = rasterize(means.detach(), quats.detach(), scales.detach(), opacities.detach(), x, viewmat, K, width,
                        height, torch.zeros(nk, dtype=means.dtype, device=means.device), backend=backend,
                        near=near, num_threads=num_threads)
        loss = (out["render"] * weights.to(out["render"].dtype).permute(2, 0, 1)).sum()
        (grad,) = torch.autograd.grad(loss, x)
    return grad.float()
