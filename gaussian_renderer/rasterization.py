"""The stateless low-level API: ``rasterize`` and ``vote_tensors`` over plain tensors, and backend selection.

Backends are reached lazily: nothing here imports native or CUDA code at module import time.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any, NamedTuple, Optional, Union

import numpy as np
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


@dataclass(frozen=True)
class PreparedGaussians:
    """A model's activated geometry, computed once per job instead of once per view.

    Votes and contribution passes render the same Gaussians from many cameras; the activations (exp of the
    scales, normalised rotations, sigmoid of the opacities) and contiguous copies do not depend on the view.
    Build it with :func:`prepare_gaussians` (the same values the model's getters return, so results are
    bit-identical to passing the model)."""

    means: Tensor      # [N, 3] world positions
    quats: Tensor      # [N, 4] wxyz rotations (as the model's get_rotation)
    scales: Tensor     # [N, 3] activated scales, times the scaling modifier
    opacities: Tensor  # [N] activated opacities

    def __len__(self) -> int:
        return int(self.means.shape[0])

    def subset(self, idx: Tensor) -> "PreparedGaussians":  # idx: [M] int64 or [N] bool
        return PreparedGaussians(self.means[idx], self.quats[idx], self.scales[idx], self.opacities[idx])

    def differs_from(self, other: "PreparedGaussians") -> Tensor:  # -> [N] bool
        """Gaussians whose values are not bit-identical in ``other`` (same length): torch's vectorised activations
        can round an element differently depending on its position in the tensor (body vs tail)."""
        def bits(t: Tensor) -> Tensor:
            t = t.reshape(t.shape[0], -1)
            return t.view(torch.int32) if t.dtype == torch.float32 else t
        out = torch.zeros(len(self), dtype=torch.bool, device=self.means.device)
        for a, b in ((self.means, other.means), (self.quats, other.quats), (self.scales, other.scales),
                     (self.opacities, other.opacities)):
            out |= (bits(a) != bits(b)).any(dim=1)
        return out


def prepare_gaussians(gaussians: Any, scaling_modifier: float = 1.0) -> PreparedGaussians:
    """Detached, contiguous activated parameters of a model with Inria's getters (get_xyz, get_rotation,
    get_scaling, get_opacity); a PreparedGaussians is returned as is (scaling_modifier must then be 1)."""
    if isinstance(gaussians, PreparedGaussians):
        if scaling_modifier != 1.0:
            raise ValueError("scaling_modifier applies when preparing; these Gaussians are already prepared")
        return gaussians
    with torch.no_grad():
        scales = gaussians.get_scaling
        if scaling_modifier != 1.0:
            scales = scales * scaling_modifier
        return PreparedGaussians(means=gaussians.get_xyz.detach().contiguous(),
                                 quats=gaussians.get_rotation.detach().contiguous(),
                                 scales=scales.detach().contiguous(),
                                 opacities=gaussians.get_opacity.detach().reshape(-1).contiguous())


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
    footprint: str = "tight",
    tile_mask: Optional[Tensor] = None,  # [num_tiles] bool, cpu only: render these 16x16 tiles, others = background
) -> dict[str, Tensor]:
    """Render one view with Inria's semantics. Returns the dict documented in CONTRACT.md:
    render [C, H, W], alpha [1, H, W], depth [1, H, W] (sum z alpha T), viewspace_points [N, 3],
    visibility_filter [N], radii [N] int32. Differentiable w.r.t. means, quats, scales, opacities, colors.
    footprint: the cpu backend's tile binning, "tight" or "inria" (the reference; identical outputs).
    tile_mask: pixels of the masked tiles equal a full render's bit for bit; the other pixels are background.
    """
    opacities = opacities.reshape(-1)  # [N] (an Inria-style [N, 1] is accepted too)
    if colors.dim() != 2 or colors.shape[0] != means.shape[0]:
        raise ValueError(f"colors must be [N, C] with N = {means.shape[0]}, got {tuple(colors.shape)}")
    if background.shape != (colors.shape[1],):
        raise ValueError(f"background must be [{colors.shape[1]}] to match colors, got {tuple(background.shape)}")
    backend = resolve_backend(backend, means.device)
    if tile_mask is not None and backend != "cpu":
        raise ValueError(f"tile_mask needs the cpu backend, got {backend!r}")
    if backend == "reference":
        from gaussian_renderer.reference import rasterize_reference

        return rasterize_reference(means, quats, scales, opacities, colors, viewmat, K, width, height,
                                   background, near)
    if backend in ("inria", "gsplat"):
        from gaussian_renderer import cuda_backends

        fn = cuda_backends.rasterize_inria if backend == "inria" else cuda_backends.rasterize_gsplat
        return fn(means, quats, scales, opacities, colors, viewmat, K, width, height, background, near)
    return _rasterize_cpu(means, quats, scales, opacities, colors, viewmat, K, width, height, background, near,
                          num_threads, footprint, tile_mask)


def _rasterize_cpu(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor,
                   viewmat: Tensor, K: Tensor, width: int, height: int, background: Tensor, near: float,
                   num_threads: int, footprint: str, tile_mask: Optional[Tensor]) -> dict[str, Tensor]:
    from gaussian_renderer.cpu import bin_gaussians, check_footprint, composite, project

    if means.device.type != "cpu":
        raise ValueError(f"backend 'cpu' needs CPU tensors, got {means.device}; use backend='auto' or move them")
    proj = project(means, quats, scales, viewmat, K, width, height, near, num_threads,
                   cull=check_footprint(footprint))
    offsets, gids, radii = bin_gaussians(proj, opacities, width, height, num_threads, footprint, tile_mask)
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


def rasterize_subsets(
    means: Tensor,       # [N, 3]
    quats: Tensor,       # [N, 4] wxyz
    scales: Tensor,      # [N, 3] activated
    opacities: Tensor,   # [N] activated
    colors: Tensor,      # [N, C]
    viewmat: Tensor,     # [4, 4]
    K: Tensor,           # [3, 3]
    width: int,
    height: int,
    background: Tensor,  # [C]
    subsets: list[Optional[Tensor]],  # each [N] bool, or None for all N Gaussians
    backend: str = "cpu",
    near: float = 0.2,
    num_threads: int = 0,
) -> list[Tensor]:       # one [C, H, W] image per subset
    """Images of several subsets of one set of Gaussians seen by one camera, forward only (no autograd).

    Image i equals ``rasterize(<the rows of subsets[i]>, ...)["render"]`` bit for bit. The cpu backend projects
    and bins all N once and cuts each subset's per-tile lists out of the full ones (one native call that packs
    the Gaussians once): binning is per Gaussian and the depth sort is stable with ties in index order, so a
    subset's own lists are exactly the full lists without the other Gaussians. The per-Gaussian work (projection, footprints, the sort of all intersections)
    is then done once per camera instead of once per subset (previews: whole scene, extracted, deleted).
    Other backends render the subsets one by one."""
    opacities = opacities.reshape(-1)
    n = means.shape[0]
    for m in subsets:
        if m is not None and (m.dtype != torch.bool or tuple(m.shape) != (n,)):
            raise ValueError(f"each subset must be a [N={n}] bool mask or None, got {m.dtype} {tuple(m.shape)}")
    backend = resolve_backend(backend, means.device)
    with torch.no_grad():
        if backend != "cpu":
            def one(m: Optional[Tensor]) -> Tensor:
                if m is not None and not bool(m.any()):  # nothing to rasterize: the background
                    return background.to(colors.dtype)[:, None, None].expand(-1, height, width).clone()
                rows = (lambda t: t) if m is None else (lambda t: t[m])
                return rasterize(rows(means), rows(quats), rows(scales), rows(opacities), rows(colors), viewmat, K,
                                 width, height, background, backend=backend, near=near,
                                 num_threads=num_threads)["render"]
            return [one(m) for m in subsets]
        from gaussian_renderer.cpu import bin_gaussians, composite_subsets, project

        if means.device.type != "cpu":
            raise ValueError(f"backend 'cpu' needs CPU tensors, got {means.device}")
        proj = project(means.detach(), quats.detach(), scales.detach(), viewmat, K, width, height, near,
                       num_threads, cull=True)
        offsets, gids, _ = bin_gaussians(proj, opacities, width, height, num_threads)
        members = torch.stack([torch.ones(n, dtype=torch.bool) if m is None else m.to("cpu") for m in subsets]) \
            if subsets else torch.zeros((0, n), dtype=torch.bool)
        return list(composite_subsets(proj, opacities, colors, offsets, gids, members, width, height, background,
                                      num_threads).unbind(0))


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
    footprint: str = "tight",
) -> Tensor:            # [N, K]
    """votes[n, k] = sum_p alpha_n(p) T_n(p) weights[p, k] (forward only, no autograd).

    The cpu backend runs one front-to-back pass; the others take the gradient of
    (render(override_color=x) * weights).sum() w.r.t. x, which is the same quantity.
    """
    height, width, nk = weights.shape
    opacities = opacities.reshape(-1)
    backend = resolve_backend(backend, means.device)
    if backend == "cpu":
        from gaussian_renderer.cpu import vote_native

        g = PreparedGaussians(means.detach(), quats.detach(), scales.detach(), opacities.detach())
        proj = _project_for_vote(g, viewmat, K, width, height, near, num_threads, footprint)
        return vote_native(proj, g.opacities, weights, width, height, num_threads, footprint)
    with torch.enable_grad():
        x = torch.zeros(means.shape[0], nk, dtype=means.dtype, device=means.device, requires_grad=True)
        out = rasterize(means.detach(), quats.detach(), scales.detach(), opacities.detach(), x, viewmat, K, width,
                        height, torch.zeros(nk, dtype=means.dtype, device=means.device), backend=backend,
                        near=near, num_threads=num_threads)
        loss = (out["render"] * weights.to(out["render"].dtype).permute(2, 0, 1)).sum()
        (grad,) = torch.autograd.grad(loss, x)
    return grad.float()


def _project_for_vote(g: PreparedGaussians, viewmat: Tensor, K: Tensor, width: int, height: int, near: float,
                      num_threads: int, footprint: str) -> Any:  # -> Projected
    from gaussian_renderer.cpu import check_footprint, project

    if g.means.device.type != "cpu":
        raise ValueError(f"backend 'cpu' needs CPU tensors, got {g.means.device}")
    with torch.no_grad():
        return project(g.means, g.quats, g.scales, viewmat, K, width, height, near, num_threads,
                       cull=check_footprint(footprint))


def num_tiles(width: int, height: int) -> int:
    """16x16 tiles of a width x height image (the length of a tile mask; tiles are row-major)."""
    return ((width + 15) // 16) * ((height + 15) // 16)


def tile_mask_pixels(tile_mask: Tensor, width: int, height: int) -> Tensor:  # [num_tiles] -> [H, W] bool
    """The pixels of the masked 16x16 tiles (row-major tiles, as render's tile_mask)."""
    gx = (width + 15) // 16
    grid = tile_mask.reshape(-1, gx)
    return grid.repeat_interleave(16, 0).repeat_interleave(16, 1)[:height, :width]


SparseVotes = tuple[Tensor, Tensor, Tensor]  # (gaussian [P] int32, label [P] int32, mass [P] float32)
MAX_CHANNELS_PER_PASS = 64  # one-hot channels per vote call on the backends without a label-map kernel


def check_label_map(labels: Union[Tensor, np.ndarray], num_labels: int, width: int, height: int) -> Tensor:
    """labels as an int32 CPU tensor [H, W]; one-line ValueError for a wrong shape, dtype or value range."""
    if isinstance(labels, np.ndarray):
        if labels.dtype.kind not in "iu":
            raise ValueError(f"labels must hold integers 0..{num_labels}, got dtype {labels.dtype}")
        labels = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))
    t = labels
    if t.dim() != 2 or tuple(t.shape) != (height, width):
        raise ValueError(f"labels must be [H={height}, W={width}], got {tuple(t.shape)}")
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise ValueError(f"labels must hold integers 0..{num_labels}, got dtype {t.dtype}")
    if t.dtype not in (torch.int32, torch.int64):
        t = t.to(torch.int64)
    if num_labels < 0:
        raise ValueError(f"num_labels must be >= 0, got {num_labels}")
    if t.numel() and (int(t.min()) < 0 or int(t.max()) > num_labels):
        raise ValueError(f"label values must lie in 0..{num_labels}, got {int(t.min())}..{int(t.max())}")
    return t.to("cpu", torch.int32).contiguous()


def vote_labels_tensors(
    gaussians: PreparedGaussians,
    viewmat: Tensor,                    # [4, 4]
    K: Tensor,                          # [3, 3]
    labels: Union[Tensor, np.ndarray],  # [H, W] int, 0 = background, 1..L labels
    num_labels: int,
    backend: str = "cpu",
    near: float = 0.2,
    num_threads: int = 0,
    footprint: str = "tight",
    sparse: bool = False,
) -> Union[Tensor, SparseVotes]:
    """votes [N, L+1] float32 = vote_tensors(..., weights=one_hot(labels, L+1)), read from the label map.

    sparse=True returns the nonzero entries instead, (gaussian [P] int32, label [P] int32, mass [P] float32)
    sorted by (gaussian, label), with no [N, L+1] array: for maps with hundreds of labels. The cpu backend
    reads the int label map in the kernel (bit-identical to the one-hot vote); others vote the one-hot weights.
    """
    height, width = int(labels.shape[0]), int(labels.shape[1])
    lab = check_label_map(labels, num_labels, width, height)
    g = gaussians
    backend = resolve_backend(backend, g.means.device)
    if backend == "cpu":
        from gaussian_renderer.cpu import vote_labels_native

        proj = _project_for_vote(g, viewmat, K, width, height, near, num_threads, footprint)
        return vote_labels_native(proj, g.opacities, lab, num_labels, num_threads, footprint, sparse)
    parts = []  # one-hot weights, MAX_CHANNELS_PER_PASS channels at a time (memory: [H, W, K] floats)
    for a in range(0, num_labels + 1, MAX_CHANNELS_PER_PASS):
        k = torch.arange(a, min(a + MAX_CHANNELS_PER_PASS, num_labels + 1), dtype=lab.dtype)
        onehot = (lab[:, :, None] == k).to(g.means.device, torch.float32)
        parts.append(vote_tensors(g.means, g.quats, g.scales, g.opacities, viewmat, K, onehot, backend, near,
                                  num_threads))
    votes = torch.cat(parts, 1) if len(parts) > 1 else parts[0]
    if not sparse:
        return votes
    g, lbl = torch.nonzero(votes, as_tuple=True)
    return g.to(torch.int32).cpu(), lbl.to(torch.int32).cpu(), votes[g, lbl].cpu()


class Contribution(NamedTuple):
    """What the contribution pass returns (see contribution_tensors)."""

    mass: Tensor                         # [N] float32, sum over pixels of alpha*T (vote with unit weights)
    stoppers: Optional[Tensor]           # [H, W] int32, the Gaussian that stopped each pixel, -1: none
    stopper_tiles: Optional[Tensor]      # [P] int32, 16x16 tile (row-major) of each distinct (tile, stopper) pair
    stopper_ids: Optional[Tensor]        # [P] int32, its Gaussian; pairs sorted by (tile, id)


def contribution_tensors(gaussians: PreparedGaussians, viewmat: Tensor, K: Tensor, width: int, height: int,
                         backend: str = "cpu", near: float = 0.2, num_threads: int = 0) -> Contribution:
    # viewmat: [4, 4] world-to-camera, K: [3, 3]
    """Contribution(mass [N] float32 = sum over pixels of alpha*T, i.e. vote with unit weights, stoppers,
    stopper_tiles, stopper_ids). stoppers[p] is the Gaussian at which pixel p's compositing stopped (T would have
    dropped below 1e-4; it is not composited there), -1 if none: removing a zero-contribution Gaussian changes
    only the pixels it stops. Only the cpu backend reports stoppers (None elsewhere)."""
    g = gaussians
    backend = resolve_backend(backend, g.means.device)
    if backend == "cpu":
        from gaussian_renderer.cpu import contribution_native

        proj = _project_for_vote(g, viewmat, K, width, height, near, num_threads, "tight")
        return Contribution(*contribution_native(proj, g.opacities, width, height, num_threads))
    ones = torch.ones(height, width, 1, dtype=torch.float32, device=g.means.device)
    mass = vote_tensors(g.means, g.quats, g.scales, g.opacities, viewmat, K, ones, backend, near, num_threads)[:, 0]
    return Contribution(mass, None, None, None)


def footprint_tiles_tensors(gaussians: PreparedGaussians, viewmat: Tensor, K: Tensor, width: int, height: int,
                            near: float = 0.2, num_threads: int = 0) -> Tensor:  # -> [num_tiles] bool
    """The 16x16 tiles the Gaussians' tight footprints reach (cpu): outside them every pixel has alpha < 1/255,
    so removing these Gaussians cannot change a pixel there. viewmat: [4, 4], K: [3, 3]."""
    from gaussian_renderer.cpu import touched_tiles

    proj = _project_for_vote(gaussians, viewmat, K, width, height, near, num_threads, "tight")
    return touched_tiles(proj, gaussians.opacities, width, height, num_threads)
