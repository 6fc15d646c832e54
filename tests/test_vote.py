"""The alpha*T vote kernel: equal to autograd's gradient w.r.t. override colours, and to the alpha image."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from gaussian_renderer import render, vote
from scene.cameras import Camera


@dataclass
class Model:
    xyz: Tensor      # [N, 3]
    scaling: Tensor  # [N, 3]
    rot: Tensor      # [N, 4]
    opacity: Tensor  # [N, 1]
    active_sh_degree: int = 0

    @property
    def get_xyz(self) -> Tensor:
        return self.xyz

    @property
    def get_scaling(self) -> Tensor:
        return self.scaling

    @property
    def get_rotation(self) -> Tensor:
        return F.normalize(self.rot, dim=-1)

    @property
    def get_opacity(self) -> Tensor:
        return self.opacity

    @property
    def get_features(self) -> Tensor:  # [N, 1, 3]
        return torch.full((self.xyz.shape[0], 1, 3), 0.5)


def make_scene(seed: int, n: int, width: int, height: int) -> tuple[Camera, Model]:
    """Gaussians in front of an identity-rotation camera (off-centre principal point), some off-screen, some
    behind the near plane, opacities up to 0.999 (saturating pixels)."""
    g = torch.Generator().manual_seed(seed)
    f = 0.8 * max(width, height)
    cam = Camera(uid=0, image_name="v", width=width, height=height, fx=f, fy=f, cx=0.45 * width, cy=0.55 * height,
                 world_to_camera=np.eye(4))
    z = 1.5 + 5.0 * torch.rand(n, generator=g)
    z[: n // 12] = 0.1
    xy = (torch.rand(n, 2, generator=g) - 0.5) * 2.6 * torch.tensor([0.5 * width / f, 0.5 * height / f])
    scale = (0.01 + 0.05 * torch.rand(n, 3, generator=g)) * z[:, None] * torch.exp(torch.randn(n, 3, generator=g) * 0.4)
    model = Model(xyz=torch.cat([xy * z[:, None], z[:, None]], 1), scaling=scale,
                  rot=torch.randn(n, 4, generator=g), opacity=0.05 + 0.949 * torch.rand(n, 1, generator=g))
    return cam, model


def _autograd_votes(cam: Camera, model: Model, weights: Tensor, backend: str) -> Tensor:  # -> [N, K]
    x = torch.zeros(model.xyz.shape[0], weights.shape[2], requires_grad=True)
    out = render(cam, model, torch.zeros(weights.shape[2]), override_color=x, backend=backend)
    (out["render"] * weights.permute(2, 0, 1)).sum().backward()
    return x.grad


@pytest.mark.parametrize("k", [1, 3, 5])
def test_vote_equals_autograd_gradient(k: int) -> None:
    cam, model = make_scene(seed=k, n=260, width=50, height=38)
    weights = torch.randn(cam.height, cam.width, k, generator=torch.Generator().manual_seed(10 + k))  # signed
    votes = vote(cam, model, weights, backend="cpu")
    assert votes.shape == (260, k) and votes.dtype == torch.float32
    native_grad = _autograd_votes(cam, model, weights, "cpu")
    scale = float(native_grad.abs().max())
    assert scale > 0
    torch.testing.assert_close(votes, native_grad, atol=1e-5 * scale, rtol=1e-5)
    ref_grad = _autograd_votes(cam, model, weights, "reference")
    assert float((votes - ref_grad).norm() / ref_grad.norm()) < 4e-3


def test_unit_weights_give_total_contribution() -> None:
    """sum_n alpha_n T_n = 1 - T_final per pixel, so the votes of w = 1 add up to the alpha image."""
    cam, model = make_scene(seed=7, n=300, width=45, height=45)
    votes = vote(cam, model, torch.ones(cam.height, cam.width, 1), backend="cpu")
    with torch.no_grad():
        out = render(cam, model, torch.zeros(3), backend="cpu")
    assert float(out["alpha"].max()) > 0.99  # some saturated pixels: the T < 1e-4 stop is exercised
    total = float(out["alpha"].double().sum())
    assert abs(float(votes.double().sum()) - total) < 1e-5 * total
    assert (votes >= 0).all()
    assert (votes[~out["visibility_filter"]] == 0).all()
    assert (votes[out["visibility_filter"]] > 0).float().mean() > 0.5


def test_vote_reference_backend_agrees() -> None:
    cam, model = make_scene(seed=8, n=150, width=33, height=29)
    weights = torch.randn(cam.height, cam.width, 2, generator=torch.Generator().manual_seed(3))
    a = vote(cam, model, weights, backend="cpu")
    b = vote(cam, model, weights, backend="reference")
    assert float((a - b).norm() / b.norm()) < 4e-3


def test_vote_deterministic_and_thread_count_invariant() -> None:
    cam, model = make_scene(seed=9, n=400, width=64, height=48)
    weights = torch.randn(cam.height, cam.width, 3, generator=torch.Generator().manual_seed(4))
    first = vote(cam, model, weights, backend="cpu", num_threads=2)
    assert torch.equal(first, vote(cam, model, weights, backend="cpu", num_threads=2))
    assert torch.equal(first, vote(cam, model, weights, backend="cpu", num_threads=1))


def test_vote_rejects_mismatched_weights() -> None:
    cam, model = make_scene(seed=1, n=10, width=20, height=16)
    with pytest.raises(ValueError, match="weights must be"):
        vote(cam, model, torch.ones(16, 21, 1))


def test_scaling_modifier_applies_to_votes() -> None:
    cam, model = make_scene(seed=2, n=80, width=30, height=30)
    w = torch.ones(cam.height, cam.width, 1)
    halved = Model(model.xyz, model.scaling * 0.5, model.rot, model.opacity)
    torch.testing.assert_close(vote(cam, model, w, scaling_modifier=0.5), vote(cam, halved, w), rtol=0, atol=0)
    assert not math.isclose(float(vote(cam, model, w).sum()), float(vote(cam, halved, w).sum()))
