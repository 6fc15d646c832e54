"""eval_sh (basis tensor x coefficients) against Inria's polynomial written term by term (the reference)."""
from __future__ import annotations

import pytest
import torch

from utils.sh import C0, C1, C2, C3, eval_sh


def inria_eval_sh(deg: int, sh: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """Inria's utils/sh_utils.py eval_sh, transcribed. sh: [..., C, K]; dirs: [..., 3]."""
    result = C0 * sh[..., 0]
    if deg > 0:
        x, y, z = dirs[..., 0:1], dirs[..., 1:2], dirs[..., 2:3]
        result = result - C1 * y * sh[..., 1] + C1 * z * sh[..., 2] - C1 * x * sh[..., 3]
        if deg > 1:
            xx, yy, zz = x * x, y * y, z * z
            xy, yz, xz = x * y, y * z, x * z
            result = (result + C2[0] * xy * sh[..., 4] + C2[1] * yz * sh[..., 5]
                      + C2[2] * (2.0 * zz - xx - yy) * sh[..., 6] + C2[3] * xz * sh[..., 7]
                      + C2[4] * (xx - yy) * sh[..., 8])
            if deg > 2:
                result = (result + C3[0] * y * (3 * xx - yy) * sh[..., 9] + C3[1] * xy * z * sh[..., 10]
                          + C3[2] * y * (4 * zz - xx - yy) * sh[..., 11]
                          + C3[3] * z * (2 * zz - 3 * xx - 3 * yy) * sh[..., 12]
                          + C3[4] * x * (4 * zz - xx - yy) * sh[..., 13]
                          + C3[5] * z * (xx - yy) * sh[..., 14] + C3[6] * x * (xx - 3 * yy) * sh[..., 15])
    return result


@pytest.mark.parametrize("deg", [0, 1, 2, 3])
def test_eval_sh_matches_inria_values_and_gradients(deg: int) -> None:
    g = torch.Generator().manual_seed(deg)
    sh = torch.randn(500, 3, 16, generator=g, dtype=torch.float64, requires_grad=True)
    dirs = torch.nn.functional.normalize(torch.randn(500, 3, generator=g, dtype=torch.float64), dim=1)
    dirs.requires_grad_(True)
    w = torch.randn(500, 3, generator=g, dtype=torch.float64)
    ours = eval_sh(deg, sh, dirs)
    ref = inria_eval_sh(deg, sh, dirs)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    g_ours = torch.autograd.grad((ours * w).sum(), (sh, dirs), allow_unused=True)
    g_ref = torch.autograd.grad((ref * w).sum(), (sh, dirs), allow_unused=True)  # degree 0 ignores dirs
    for a, b, x in zip(g_ours, g_ref, (sh, dirs)):
        a = torch.zeros_like(x) if a is None else a
        b = torch.zeros_like(x) if b is None else b
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    if deg < 3:  # coefficients above the active degree get no gradient
        assert g_ours[0][..., (deg + 1) ** 2:].abs().max() == 0
