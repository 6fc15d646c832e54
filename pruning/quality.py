"""Held-out image quality of a (pruned) model: mean PSNR / SSIM over views, against photos or a reference model."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from gaussian_renderer import prepare_gaussians, render, resolve_backend, tile_mask_pixels
from pruning.prune import RenderOptions, _bar, footprints, rerounded
from scene.cameras import Camera, ImageCache
from scene.gaussian_model import GaussianModel
from utils.loss_utils import psnr, ssim


@dataclass
class Quality:
    """Mean over views of per-view PSNR (dB) and SSIM, Inria's metrics.py convention (renders clamped to [0, 1])."""

    psnr: float
    ssim: float
    num_views: int


def evaluate(model: GaussianModel, cameras: Sequence[Camera], opts: RenderOptions,
             reference: Optional[GaussianModel] = None, cache: Optional[ImageCache] = None,
             desc: str = "quality") -> Quality:
    """Quality of ``model``'s renders against the cameras' images, or against ``reference``'s renders when
    given (used when the source images are unavailable)."""
    psnrs, ssims = [], []
    bg = opts.background.to(opts.device)
    with torch.no_grad():
        for cam in _bar(cameras, desc, opts):
            img = _render(model, cam, bg, opts)
            gt = _render(reference, cam, bg, opts) if reference is not None else \
                cam.load_image(cache, device=opts.device)
            psnrs.append(float(psnr(img, gt)))
            ssims.append(float(ssim(img, gt)))
    n = len(psnrs)
    return Quality(float(np.mean(psnrs)) if n else float("nan"), float(np.mean(ssims)) if n else float("nan"), n)


def evaluate_pruned(original: GaussianModel, pruned: GaussianModel, removed: Tensor, cameras: Sequence[Camera],
                    opts: RenderOptions, against_original: bool = False, cache: Optional[ImageCache] = None,
                    desc: str = "quality") -> tuple[Quality, Quality]:
    """(evaluate(original, cameras), evaluate(pruned, cameras)) against the photos, or with against_original
    (no photos): (NaN placeholder, evaluate(pruned, cameras, reference=original)): the same numbers.

    removed: [N] bool, pruned = original.subset(~removed). Each view is rendered in full once, from the original;
    the pruned render can differ only on the tiles of the removed Gaussians' footprints (they may be composited
    in these views) and of kept Gaussians that torch rounds differently in the subset, so only those tiles are
    rendered for the pruned model (cpu backend; others render both models in full)."""
    n = len(cameras)
    if resolve_backend(opts.backend, torch.device(opts.device)) != "cpu":
        before = Quality(float("nan"), float("nan"), n) if against_original else \
            evaluate(original, cameras, opts, None, cache, desc=f"{desc} (before)")
        return before, evaluate(pruned, cameras, opts, original if against_original else None, cache,
                                desc=f"{desc} (after)")
    gone = prepare_gaussians(original).subset(torch.nonzero(removed).squeeze(1))
    masks = footprints(cameras, [gone, *rerounded(original, pruned, removed)], opts)
    scores: dict[str, list[float]] = {"psnr_b": [], "ssim_b": [], "psnr_a": [], "ssim_a": []}
    bg = opts.background.to(opts.device)
    with torch.no_grad():
        for cam, mask in zip(_bar(cameras, desc, opts), masks):
            raw = render(cam, original, bg, backend=opts.backend, num_threads=opts.num_threads)["render"]
            after = raw
            if bool(mask.any()):
                part = render(cam, pruned, bg, backend=opts.backend, num_threads=opts.num_threads,
                              tile_mask=mask)["render"]
                after = torch.where(tile_mask_pixels(mask, cam.width, cam.height).to(raw.device), part, raw)
            img_b, img_a = raw.clamp(0.0, 1.0), after.clamp(0.0, 1.0)
            gt = img_b if against_original else cam.load_image(cache, device=opts.device)
            if not against_original:
                scores["psnr_b"].append(float(psnr(img_b, gt)))
                scores["ssim_b"].append(float(ssim(img_b, gt)))
            scores["psnr_a"].append(float(psnr(img_a, gt)))
            scores["ssim_a"].append(float(ssim(img_a, gt)))

    def mean(v: list[float]) -> float:
        return float(np.mean(v)) if v else float("nan")
    return (Quality(mean(scores["psnr_b"]), mean(scores["ssim_b"]), n),
            Quality(mean(scores["psnr_a"]), mean(scores["ssim_a"]), n))


def _render(model: GaussianModel, cam: Camera, bg: Tensor, opts: RenderOptions) -> Tensor:  # -> [3, H, W]
    out = render(cam, model, bg, backend=opts.backend, num_threads=opts.num_threads)["render"]
    return out.clamp(0.0, 1.0)
