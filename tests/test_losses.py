"""SSIM / PSNR against an independent NumPy/SciPy implementation of the same definition."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import correlate

from utils.loss_utils import psnr, ssim, training_loss


def _ssim_numpy(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM with an 11x11 Gaussian (sigma 1.5) and zero padding, per channel, averaged."""
    x = np.arange(11) - 5
    g = np.exp(-x ** 2 / (2 * 1.5 ** 2))
    g /= g.sum()
    w = np.outer(g, g)
    f = lambda im: correlate(im, w, mode="constant", cval=0.0)  # noqa: E731
    vals = []
    for c in range(a.shape[0]):
        p, q = a[c].astype(np.float64), b[c].astype(np.float64)
        m1, m2 = f(p), f(q)
        s1, s2, s12 = f(p * p) - m1 ** 2, f(q * q) - m2 ** 2, f(p * q) - m1 * m2
        c1, c2 = 0.01 ** 2, 0.03 ** 2
        vals.append(((2 * m1 * m2 + c1) * (2 * s12 + c2)) / ((m1 ** 2 + m2 ** 2 + c1) * (s1 + s2 + c2)))
    return float(np.mean(vals))


def test_ssim_matches_independent_implementation():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 40, 33, generator=g)
    b = (a + 0.1 * torch.randn(3, 40, 33, generator=g)).clamp(0, 1)
    assert ssim(a, a).item() == pytest.approx(1.0, abs=1e-6)
    assert ssim(a, b).item() == pytest.approx(_ssim_numpy(a.numpy(), b.numpy()), abs=1e-5)


def test_psnr_and_loss():
    a = torch.zeros(3, 8, 8)
    b = torch.full((3, 8, 8), 0.1)
    assert psnr(a, b).item() == pytest.approx(20.0, abs=1e-4)
    assert training_loss(a, a, 0.2).item() == pytest.approx(0.0, abs=1e-6)
    assert training_loss(a, b, 0.0).item() == pytest.approx(0.1, abs=1e-6)
