"""Held-out image quality of a (pruned) model: mean PSNR / SSIM over views, against photos or a reference model."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from gaussian_renderer import render
from pruning.prune import RenderOptions, _bar
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


def _render(model: GaussianModel, cam: Camera, bg: Tensor, opts: RenderOptions) -> Tensor:  # -> [3, H, W]
    out = render(cam, model, bg, backend=opts.backend, num_threads=opts.num_threads)["render"]
    return out.clamp(0.0, 1.0)
