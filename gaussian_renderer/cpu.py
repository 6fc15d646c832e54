"""The native CPU backend: torch projection + C++/OpenMP binning, compositing, backward and vote.

The autograd Function wraps only the compositing and returns TRUE gradients for means2d, conics, opacities
and colours (no NDC scaling, no halved conic off-diagonal); torch autograd chains them to means, scales,
rotations, SH and override colours. The single deviation from a plain derivative is Inria's: the 0.99 alpha
clamp is passed straight through (d alpha / d(opacity * G) = 1 even where alpha was clamped).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from gaussian_renderer.projection import Projected


def _ops() -> Any:
    from gaussian_renderer import native  # builds on first use, never at import

    return native.ops()


def bin_gaussians(proj: Projected, width: int, height: int, num_threads: int) -> tuple[Tensor, Tensor, Tensor]:
    """(tile_offsets [T+1] int64, isect_gids [M] int32, radii [N] int32 zeroed where no tile is touched)."""
    offsets, gids, touched = _ops().bin(proj.means2d.detach().float().contiguous(), proj.radii.contiguous(),
                                        proj.depths.detach().float().contiguous(), width, height, num_threads)
    radii = torch.where(touched > 0, proj.radii, torch.zeros_like(proj.radii))
    return offsets, gids, radii


class _Composite(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, means2d: Tensor, conics: Tensor, opacities: Tensor, colors: Tensor, offsets: Tensor,
                gids: Tensor, width: int, height: int, num_threads: int) -> tuple[Tensor, Tensor]:
        out, t_final, last = _ops().forward(means2d, conics, opacities, colors, offsets, gids, width, height,
                                            num_threads)
        ctx.save_for_backward(means2d, conics, opacities, colors, offsets, gids, t_final, last)
        ctx.num_threads = num_threads
        return out, t_final

    @staticmethod
    def backward(ctx: Any, d_out: Tensor, d_t: Tensor):  # type: ignore[override]
        means2d, conics, opacities, colors, offsets, gids, t_final, last = ctx.saved_tensors
        if d_out is None:
            d_out = torch.zeros((colors.shape[1],) + tuple(t_final.shape), dtype=torch.float32)
        if d_t is None:
            d_t = torch.zeros_like(t_final)
        dm, dc, do, dcol = _ops().backward(means2d, conics, opacities, colors, offsets, gids, t_final, last,
                                           d_out.float().contiguous(), d_t.float().contiguous(), ctx.num_threads)
        return dm, dc, do, dcol, None, None, None, None, None


def composite(
    means2d: Tensor,    # [N, 2]
    conics: Tensor,     # [N, 3]
    opacities: Tensor,  # [N]
    colors: Tensor,     # [N, C] any C
    offsets: Tensor,    # [T + 1] int64 from bin_gaussians
    gids: Tensor,       # [M] int32 from bin_gaussians
    width: int,
    height: int,
    num_threads: int = 0,
) -> tuple[Tensor, Tensor]:
    """Differentiable sum c alpha T without background: ([C, H, W], final transmittance [H, W])."""
    def f32(t: Tensor) -> Tensor:
        return t.float().contiguous()

    return _Composite.apply(f32(means2d), f32(conics), f32(opacities), f32(colors), offsets, gids, width, height,
                            num_threads)


def vote_native(proj: Projected, opacities: Tensor, weights: Tensor, width: int, height: int,
                num_threads: int) -> Tensor:  # opacities: [N], weights: [H, W, K] -> [N, K]
    with torch.no_grad():
        offsets, gids, _ = bin_gaussians(proj, width, height, num_threads)
        return _ops().vote(proj.means2d.float().contiguous(), proj.conics.float().contiguous(),
                           opacities.float().contiguous(), offsets, gids, weights.float().contiguous(),
                           num_threads)
