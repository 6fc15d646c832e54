"""Training losses and image metrics (Inria's L1 + D-SSIM, PSNR)."""
from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import Tensor


def l1_loss(a: Tensor, b: Tensor) -> Tensor:
    return (a - b).abs().mean()


def _gaussian_window(size: int, sigma: float, channels: int, like: Tensor) -> Tensor:
    """[C, 1, size, size] separable Gaussian window, normalised to sum 1."""
    x = torch.arange(size, dtype=like.dtype, device=like.device) - size // 2
    g = torch.exp(-(x * x) / (2.0 * sigma * sigma))
    g = g / g.sum()
    return (g[:, None] @ g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim(img1: Tensor, img2: Tensor, window_size: int = 11, sigma: float = 1.5) -> Tensor:
    """Mean SSIM with Inria's conventions (11x11 Gaussian window, sigma 1.5, zero padding).

    img1, img2: Tensor  # [C, H, W] or [B, C, H, W], values in [0, 1]
    """
    if img1.dim() == 3:
        img1, img2 = img1[None], img2[None]
    c = img1.shape[1]
    w = _gaussian_window(window_size, sigma, c, img1)
    pad = window_size // 2
    mu1 = F.conv2d(img1, w, padding=pad, groups=c)
    mu2 = F.conv2d(img2, w, padding=pad, groups=c)
    mu1_sq, mu2_sq, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    s1 = F.conv2d(img1 * img1, w, padding=pad, groups=c) - mu1_sq
    s2 = F.conv2d(img2 * img2, w, padding=pad, groups=c) - mu2_sq
    s12 = F.conv2d(img1 * img2, w, padding=pad, groups=c) - mu12
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    ssim_map = ((2 * mu12 + c1) * (2 * s12 + c2)) / ((mu1_sq + mu2_sq + c1) * (s1 + s2 + c2))
    return ssim_map.mean()


def psnr(img1: Tensor, img2: Tensor) -> Tensor:
    """PSNR in dB for images in [0, 1] (mean over all pixels and channels).

    img1, img2: Tensor  # [C, H, W]
    """
    mse = ((img1 - img2) ** 2).mean()
    return 10.0 * torch.log10(1.0 / mse.clamp_min(1e-12))


def training_loss(image: Tensor, gt: Tensor, lambda_dssim: float) -> Tensor:
    """Inria's loss: (1 - λ)·L1 + λ·(1 - SSIM).

    image, gt: Tensor  # [3, H, W]
    """
    return (1.0 - lambda_dssim) * l1_loss(image, gt) + lambda_dssim * (1.0 - ssim(image, gt))


__all__ = ["l1_loss", "ssim", "psnr", "training_loss"]
