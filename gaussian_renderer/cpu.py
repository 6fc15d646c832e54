"""The native CPU backend: C++/OpenMP projection, SH colours, binning, compositing, backward and vote.

Projection and SH colours are autograd Functions over the native kernels (float32; other dtypes fall back to
the torch versions in projection.py and utils/sh.py, which are also the test references). The compositing
Function returns TRUE gradients for means2d, conics, opacities
and colours (no NDC scaling, no halved conic off-diagonal); torch autograd chains them to means, scales,
rotations, SH and override colours. The single deviation from a plain derivative is Inria's: the 0.99 alpha
clamp is passed straight through (d alpha / d(opacity * G) = 1 even where alpha was clamped).

Footprints: ``footprint="tight"`` (default) frustum-culls in the projection and bins each Gaussian only to the
tiles where its alpha can reach 1/255 (opacity-aware box + AccuTile); ``"inria"`` is Inria's 3-sigma square,
kept as the reference. Every output (images, gradients, votes, radii) is bit-identical between the two
(tests/test_footprint.py); only the work differs.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from gaussian_renderer.projection import Projected

FOOTPRINTS = ("tight", "inria")  # tile binning modes; "inria" is the reference (same outputs, more work)


def _ops() -> Any:
    from gaussian_renderer import native  # builds on first use, never at import

    return native.ops()


class _Project(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, means: Tensor, quats: Tensor, scales: Tensor, view: list[float], intr: list[float],
                near: float, size: tuple[int, int], cull: bool,
                num_threads: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        m2, conics, depths, radii = _ops().project_forward(means, quats, scales, view, intr, near, size[0], size[1],
                                                           cull, num_threads)
        ctx.save_for_backward(means, quats, scales)
        ctx.camera = (view, intr, near, num_threads)
        ctx.mark_non_differentiable(radii)
        return m2, conics, depths, radii

    @staticmethod
    def backward(ctx: Any, d_m2: Tensor, d_conics: Tensor, d_depths: Tensor, _d_radii: Any):  # type: ignore[override]
        means, quats, scales = ctx.saved_tensors
        view, intr, near, num_threads = ctx.camera

        def grad(t: Any, shape: tuple[int, ...]) -> Tensor:
            return torch.zeros(shape, dtype=torch.float32) if t is None else t.float().contiguous()

        n = means.shape[0]
        dm, dq, ds = _ops().project_backward(means, quats, scales, view, intr, near, grad(d_m2, (n, 2)),
                                             grad(d_conics, (n, 3)), grad(d_depths, (n,)), num_threads)
        return dm, dq, ds, None, None, None, None, None, None


def project(
    means: Tensor,    # [N, 3] world
    quats: Tensor,    # [N, 4] wxyz, any norm
    scales: Tensor,   # [N, 3] activated
    viewmat: Tensor,  # [4, 4] world-to-camera (a constant: no camera gradients)
    K: Tensor,        # [3, 3]
    width: int,
    height: int,
    near: float = 0.2,
    num_threads: int = 0,
    cull: bool = False,
) -> Projected:
    """projection.project_gaussians in one native pass (float32 CPU tensors); other dtypes take the torch one.

    At 100k Gaussians the torch version costs ~40 ms per training iteration in a few hundred small kernels and
    their autograd nodes; this is a few ms. tests/test_projection.py checks it against the torch version.
    cull=True skips the rotation / covariance work of Gaussians that provably touch no tile of the image
    (radius 0, conic 0; everything a render computes from the result is unchanged)."""
    from gaussian_renderer.projection import fov_limits, intrinsics, project_gaussians

    if not all(t.dtype == torch.float32 and t.device.type == "cpu" for t in (means, quats, scales)):
        return project_gaussians(means, quats, scales, viewmat, K, width, height, near)
    fx, fy, cx, cy = intrinsics(K)
    intr = [fx, fy, cx, cy, *fov_limits(width, height, fx, fy, cx, cy)]
    view = [float(v) for v in viewmat.detach().double().cpu()[:3].reshape(-1).tolist()]
    m2, conics, depths, radii = _Project.apply(means.contiguous(), quats.contiguous(), scales.contiguous(), view,
                                               intr, float(near), (int(width), int(height)), bool(cull),
                                               num_threads)
    return Projected(means2d=m2, conics=conics, depths=depths, radii=radii)


class _SHColors(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, means: Tensor, dc: Tensor, rest: Tensor, centre: list[float], degree: int,
                num_threads: int) -> Tensor:
        ctx.save_for_backward(means, dc, rest)
        ctx.args = (centre, degree, num_threads)
        return _ops().sh_forward(means, dc, rest, centre, degree, num_threads)

    @staticmethod
    def backward(ctx: Any, d_colors: Tensor):  # type: ignore[override]
        means, dc, rest = ctx.saved_tensors
        centre, degree, num_threads = ctx.args
        dm, ddc, drest = _ops().sh_backward(means, dc, rest, centre, degree, d_colors.float().contiguous(),
                                            num_threads)
        return dm, ddc, drest, None, None, None


def sh_colors_native(
    means: Tensor,  # [N, 3] float32
    dc: Tensor,     # [N, 1, 3] DC coefficients (Inria's _features_dc)
    rest: Tensor,   # [N, R, 3] higher coefficients (_features_rest), R >= (degree + 1)^2 - 1
    centre: list[float],
    degree: int,
    num_threads: int = 0,
) -> Tensor:        # [N, 3]
    """clamp_min(SH(normalise(means - centre)) + 0.5, 0) in one native pass, reading DC and rest in place (no
    cat). Same values and gradients as utils.sh.eval_sh (tests/test_sh.py)."""
    return _SHColors.apply(means.contiguous(), dc.contiguous(), rest.contiguous(), centre, int(degree),
                           num_threads)


def check_footprint(footprint: str) -> bool:  # -> tight?
    if footprint not in FOOTPRINTS:
        raise ValueError(f"footprint must be one of {', '.join(FOOTPRINTS)}, got {footprint!r}")
    return footprint == "tight"


def bin_gaussians(
    proj: Projected,
    opacities: Tensor,                   # [N]
    width: int,
    height: int,
    num_threads: int = 0,
    footprint: str = "tight",
    tile_mask: Optional[Tensor] = None,  # [num_tiles] bool: bin to these tiles only (the others stay empty)
) -> tuple[Tensor, Tensor, Tensor]:
    """(tile_offsets [T+1] int64, isect_gids [M] int32, radii [N] int32 zeroed where Inria's 3-sigma rect touches
    no tile). The radii keep Inria's meaning in both footprints (training's densification statistics use them)."""
    tight = check_footprint(footprint)
    if tile_mask is not None:
        tile_mask = tile_mask.to("cpu", torch.bool).contiguous()
    offsets, gids, touched = _ops().bin(
        proj.means2d.detach().float().contiguous(), proj.conics.detach().float().contiguous(),
        opacities.detach().reshape(-1).float().contiguous(), proj.radii.contiguous(),
        proj.depths.detach().float().contiguous(), width, height, tight, tile_mask, num_threads)
    radii = torch.where(touched > 0, proj.radii, torch.zeros_like(proj.radii))
    return offsets, gids, radii


def composite_subsets(proj: Projected, opacities: Tensor, colors: Tensor, offsets: Tensor, gids: Tensor,
                      members: Tensor, width: int, height: int, background: Tensor,
                      num_threads: int = 0) -> Tensor:  # -> [S, C, H, W]
    """Forward-only images of S subsets (members [S, N] bool) of one binned set over background [C]: image s is
    rasterize's "render" of the rows of members[s] alone, bit for bit (the native op cuts each tile's list down to
    the subset's Gaussians, order kept, which is what binning the subset alone gives; the channels are composited
    independently, so the depth channel and viewspace points change nothing). The Gaussians are packed once."""
    with torch.no_grad():
        m2, conics, op = _screen(proj, opacities)
        out, t_final = _ops().forward_subsets(m2, conics, op, colors.detach().float().contiguous(), offsets, gids,
                                              members.to(torch.bool).contiguous(), width, height, num_threads)
        return out + t_final[:, None] * background.to(out.dtype)[None, :, None, None]


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
        d_out = d_out.float()
        # Trailing channels with no upstream gradient (the depth channel in training) add only zeros: the kernel
        # reads the first C' channels of d_out (a view, no copy) and returns zero colour gradients for the rest.
        used = (d_out.reshape(d_out.shape[0], -1).abs().amax(1) > 0).nonzero()
        n_up = int(used[-1]) + 1 if used.numel() else 0
        dm, dc, do, dcol = _ops().backward(means2d, conics, opacities, colors, offsets, gids, t_final, last,
                                           d_out[:n_up].contiguous(), d_t.float().contiguous(), ctx.num_threads)
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


def _screen(proj: Projected, opacities: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    return (proj.means2d.detach().float().contiguous(), proj.conics.detach().float().contiguous(),
            opacities.detach().reshape(-1).float().contiguous())


def vote_native(proj: Projected, opacities: Tensor, weights: Tensor, width: int, height: int, num_threads: int,
                footprint: str = "tight") -> Tensor:  # opacities: [N], weights: [H, W, K] -> [N, K]
    with torch.no_grad():
        offsets, gids, _ = bin_gaussians(proj, opacities, width, height, num_threads, footprint)
        return _ops().vote(*_screen(proj, opacities), offsets, gids, weights.float().contiguous(), num_threads)


def vote_labels_native(proj: Projected, opacities: Tensor, labels: Tensor, num_labels: int, num_threads: int,
                       footprint: str = "tight", sparse: bool = False) -> Any:
    """labels [H, W] int32 in 0..L -> votes [N, L+1] float32, or sparse=True: (gaussian [P] int32,
    label [P] int32, mass [P] float32) sorted by (gaussian, label), the nonzero entries of the same votes."""
    height, width = labels.shape
    with torch.no_grad():
        offsets, gids, _ = bin_gaussians(proj, opacities, width, height, num_threads, footprint)
        op = _ops().vote_labels_sparse if sparse else _ops().vote_labels
        return op(*_screen(proj, opacities), offsets, gids, labels.to(torch.int32).contiguous(), int(num_labels),
                  num_threads)


def contribution_native(proj: Projected, opacities: Tensor, width: int, height: int, num_threads: int,
                        footprint: str = "tight") -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(contribution [N] float32 = vote with unit weights, stoppers [H, W] int32: the Gaussian at which each
    pixel's compositing stopped, -1 where it ran to the end of the list, and the distinct (tile, stopper) pairs
    stopper_tiles [P] int32, stopper_ids [P] int32, sorted by (tile, id))."""
    with torch.no_grad():
        offsets, gids, _ = bin_gaussians(proj, opacities, width, height, num_threads, footprint)
        return _ops().contribution(*_screen(proj, opacities), offsets, gids, width, height, num_threads)


def touched_tiles(proj: Projected, opacities: Tensor, width: int, height: int, num_threads: int) -> Tensor:
    """[num_tiles] bool: the tiles of the tight footprints (every pixel outside them has alpha < 1/255)."""
    offsets, _, _ = bin_gaussians(proj, opacities, width, height, num_threads, "tight")
    return offsets[1:] > offsets[:-1]
