"""Differentiable Gaussian rendering with Inria's semantics (API in CONTRACT.md).

``render`` and ``vote`` take a camera and a Gaussian model (Inria's interface); both wrap the stateless
tensor functions in :mod:`gaussian_renderer.rasterization`. Importing this package compiles and imports no
native or CUDA code: the CPU extension is built on first use (``python -m gaussian_renderer.native``
prebuilds it), CUDA backends are imported only when chosen.
"""
from __future__ import annotations

from typing import Any, Optional, Union

import numpy as np
import torch
from torch import Tensor

from gaussian_renderer.rasterization import (BackendUnavailable, Contribution, PreparedGaussians, SparseVotes,
                                             available_backends, contribution_tensors, footprint_tiles_tensors,
                                             num_tiles, prepare_gaussians, rasterize, rasterize_subsets, resolve_backend,
                                             tile_mask_pixels, vote_labels_tensors, vote_tensors)
from utils.sh import eval_sh

__all__ = ["render", "render_subsets", "vote", "vote_labels", "contribution", "footprint_tiles", "rasterize",
           "rasterize_subsets", "vote_tensors", "vote_labels_tensors", "contribution_tensors",
           "footprint_tiles_tensors", "prepare_gaussians", "PreparedGaussians", "SparseVotes", "available_backends",
           "resolve_backend", "BackendUnavailable", "sh_colors", "num_tiles", "tile_mask_pixels", "Contribution"]


def _near(camera: Any) -> float:
    """The camera's near plane (scene.cameras.Camera.znear; foreign frames may set their own), else 0.2."""
    return float(getattr(camera, "znear", 0.2))


def sh_colors(camera: Any, gaussians: Any, native: bool = False, num_threads: int = 0) -> Tensor:  # -> [N, 3]
    """View-dependent colours: clamp_min(SH(dirs) + 0.5, 0), dirs = normalise(mean - camera centre).

    native=True evaluates them with the CPU extension (float32 CPU models exposing Inria's
    get_features_dc / get_features_rest); anything else takes utils.sh.eval_sh in torch."""
    means = gaussians.get_xyz
    if native and means.device.type == "cpu" and means.dtype == torch.float32 \
            and hasattr(gaussians, "get_features_dc") and hasattr(gaussians, "get_features_rest"):
        from gaussian_renderer.cpu import sh_colors_native

        return sh_colors_native(means, gaussians.get_features_dc, gaussians.get_features_rest,
                                [float(v) for v in camera.camera_center], gaussians.active_sh_degree, num_threads)
    centre = torch.as_tensor(camera.camera_center, dtype=means.dtype, device=means.device)
    dirs = means - centre
    dirs = dirs / dirs.norm(dim=1, keepdim=True)
    sh = gaussians.get_features.transpose(1, 2)  # [N, 3, (D+1)^2]
    return torch.clamp_min(eval_sh(gaussians.active_sh_degree, sh, dirs) + 0.5, 0.0)


def render(camera: Any, gaussians: Any, background: Tensor, override_color: Optional[Tensor] = None,
           scaling_modifier: float = 1.0, backend: str = "auto", num_threads: int = 0, footprint: str = "tight",
           tile_mask: Optional[Tensor] = None) -> dict[str, Tensor]:
    """Render ``gaussians`` from ``camera`` (scene.cameras.Camera). background: [C]; override_color: [N, C];
    tile_mask: [num_tiles] bool (cpu): render only those 16x16 tiles (bit-identical there), background elsewhere."""
    means = gaussians.get_xyz
    colors = (sh_colors(camera, gaussians, native=resolve_backend(backend, means.device) == "cpu",
                        num_threads=num_threads) if override_color is None else override_color)
    return rasterize(means, gaussians.get_rotation, gaussians.get_scaling * scaling_modifier,
                     gaussians.get_opacity.reshape(-1), colors, camera.viewmat(means.device),
                     camera.K(means.device), camera.width, camera.height, background.to(means.device),
                     backend=backend, near=_near(camera), num_threads=num_threads, footprint=footprint,
                     tile_mask=tile_mask)


def render_subsets(camera: Any, gaussians: Any, colors: Tensor, subsets: list[Optional[Tensor]], background: Tensor,
                   backend: str = "auto", num_threads: int = 0) -> list[Tensor]:
    """Images [C, H, W] of several subsets of one model from one camera, forward only; image i equals
    ``render(camera, <the rows of subsets[i]>, background, override_color=colors[rows])["render"]`` bit for bit,
    with the model projected and binned once (cpu). colors: [N, C]; subsets: [N] bool masks, None = all."""
    means = gaussians.get_xyz
    return rasterize_subsets(means, gaussians.get_rotation, gaussians.get_scaling, gaussians.get_opacity.reshape(-1),
                             colors, camera.viewmat(means.device), camera.K(means.device), camera.width,
                             camera.height, background.to(means.device), subsets, backend=backend,
                             near=_near(camera), num_threads=num_threads)


def vote(camera: Any, gaussians: Any, weights: Tensor, scaling_modifier: float = 1.0, backend: str = "auto",
         num_threads: int = 0) -> Tensor:
    """votes [N, K] = sum over pixels of alpha * T * weights [H, W, K] (forward only, no autograd).
    gaussians: a model, or a PreparedGaussians (prepare_gaussians once per job, not once per view)."""
    if weights.dim() != 3 or weights.shape[0] != camera.height or weights.shape[1] != camera.width:
        raise ValueError(f"weights must be [H={camera.height}, W={camera.width}, K], got {tuple(weights.shape)}")
    g = prepare_gaussians(gaussians, scaling_modifier)
    return vote_tensors(g.means, g.quats, g.scales, g.opacities, camera.viewmat(g.means.device),
                        camera.K(g.means.device), weights.to(g.means.device), backend=backend, near=_near(camera),
                        num_threads=num_threads)


def vote_labels(camera: Any, gaussians: Any, labels: Union[Tensor, np.ndarray], num_labels: int,
                backend: str = "auto", num_threads: int = 0, sparse: bool = False) -> Union[Tensor, SparseVotes]:
    """Votes of a label map: labels [H, W] int in 0..L (0 = background) -> votes [N, L+1] float32, equal to
    ``vote(camera, gaussians, one_hot(labels, L+1))`` without the [H, W, L+1] weights. sparse=True: the nonzero
    entries (gaussian [P] int32, label [P] int32, mass [P] float32) sorted by (gaussian, label).
    gaussians: a model or a PreparedGaussians."""
    if tuple(labels.shape) != (camera.height, camera.width):
        raise ValueError(f"labels must be [H={camera.height}, W={camera.width}], got {tuple(labels.shape)}")
    g = prepare_gaussians(gaussians)
    return vote_labels_tensors(g, camera.viewmat(g.means.device), camera.K(g.means.device), labels, num_labels,
                               backend=backend, near=_near(camera), num_threads=num_threads, sparse=sparse)


def contribution(camera: Any, gaussians: Any, backend: str = "auto", num_threads: int = 0) -> Contribution:
    """Contribution(mass [N] float32 = vote(camera, gaussians, ones[H, W, 1])[:, 0], stoppers [H, W] int32,
    stopper_tiles [P] int32, stopper_ids [P] int32): the Gaussian at which each pixel's compositing stopped (-1:
    none) and the distinct (tile, stopper) pairs; the last three are None off the cpu backend."""
    g = prepare_gaussians(gaussians)
    return contribution_tensors(g, camera.viewmat(g.means.device), camera.K(g.means.device), camera.width,
                                camera.height, backend=backend, near=_near(camera), num_threads=num_threads)


def footprint_tiles(camera: Any, gaussians: Any, num_threads: int = 0) -> Tensor:  # -> [num_tiles] bool
    """The 16x16 tiles (row-major) the Gaussians can reach with alpha >= 1/255 in this view (cpu)."""
    g = prepare_gaussians(gaussians)
    return footprint_tiles_tensors(g, camera.viewmat(g.means.device), camera.K(g.means.device), camera.width,
                                   camera.height, near=_near(camera), num_threads=num_threads)
