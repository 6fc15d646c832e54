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


# ----- label-map votes ------------------------------------------------------------------------------------
def _label_map(seed: int, height: int, width: int, num_labels: int) -> Tensor:  # [H, W] int64, blocky regions
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, num_labels + 1, ((height + 4) // 5, (width + 4) // 5), generator=g)
    lab = coarse.repeat_interleave(5, 0).repeat_interleave(5, 1)[:height, :width].clone()
    noise = torch.rand(height, width, generator=g) < 0.05  # scattered single pixels: mixed chunks
    lab[noise] = torch.randint(0, num_labels + 1, (int(noise.sum()),), generator=g)
    return lab


def _onehot_votes(cam: Camera, model: Model, lab: Tensor, num_labels: int) -> Tensor:  # [N, L+1]
    """Today's path: dense one-hot weights, voted 64 channels at a time (segmentation/voting.py's passes)."""
    w = F.one_hot(lab, num_labels + 1).float()
    return torch.cat([vote(cam, model, w[:, :, a:a + 64].contiguous(), backend="cpu")
                      for a in range(0, num_labels + 1, 64)], 1)


def _bits(t: Tensor) -> Tensor:
    return t.contiguous().view(torch.int32)


@pytest.mark.parametrize("num_labels", [1, 4, 300])
def test_label_map_vote_is_bit_identical_to_onehot_vote(num_labels: int) -> None:
    from gaussian_renderer import vote_labels

    cam, model = make_scene(seed=20 + num_labels, n=500, width=70, height=45)
    lab = _label_map(num_labels, cam.height, cam.width, num_labels)
    dense = vote_labels(cam, model, lab, num_labels, backend="cpu")
    ref = _onehot_votes(cam, model, lab, num_labels)
    assert dense.shape == (500, num_labels + 1) and dense.dtype == torch.float32
    assert float(ref.sum()) > 0
    assert torch.equal(_bits(dense), _bits(ref))
    # numpy label maps, any integer dtype, are accepted
    assert torch.equal(vote_labels(cam, model, lab.numpy().astype(np.uint16), num_labels, backend="cpu"), dense)


@pytest.mark.parametrize("num_labels", [2, 300])
def test_sparse_label_vote_lists_the_nonzero_dense_entries(num_labels: int) -> None:
    from gaussian_renderer import vote_labels

    cam, model = make_scene(seed=30 + num_labels, n=400, width=66, height=50)
    lab = _label_map(7, cam.height, cam.width, num_labels)
    dense = vote_labels(cam, model, lab, num_labels, backend="cpu")
    g, lbl, mass = vote_labels(cam, model, lab, num_labels, backend="cpu", sparse=True)
    assert g.dtype == lbl.dtype == torch.int32 and mass.dtype == torch.float32
    key = g.long() * (num_labels + 1) + lbl.long()
    assert (key[1:] > key[:-1]).all(), "triplets must be sorted by (gaussian, label), without duplicates"
    nz = torch.nonzero(dense)
    assert torch.equal(nz[:, 0], g.long()) and torch.equal(nz[:, 1], lbl.long())
    assert torch.equal(_bits(dense[g.long(), lbl.long()]), _bits(mass))


def test_label_votes_are_thread_count_invariant() -> None:
    from gaussian_renderer import vote_labels

    cam, model = make_scene(seed=41, n=600, width=80, height=64)
    lab = _label_map(3, cam.height, cam.width, 40)
    for sparse in (False, True):
        one = vote_labels(cam, model, lab, 40, backend="cpu", num_threads=1, sparse=sparse)
        for threads in (2, 3):
            other = vote_labels(cam, model, lab, 40, backend="cpu", num_threads=threads, sparse=sparse)
            for a, b in zip(one if sparse else [one], other if sparse else [other]):
                assert torch.equal(a, b)


def test_label_votes_of_reference_backend_agree() -> None:
    from gaussian_renderer import vote_labels

    cam, model = make_scene(seed=42, n=150, width=33, height=29)
    lab = _label_map(4, cam.height, cam.width, 3)
    a = vote_labels(cam, model, lab, 3, backend="cpu")
    b = vote_labels(cam, model, lab, 3, backend="reference")
    assert float((a - b).norm() / b.norm()) < 4e-3
    g, lbl, mass = vote_labels(cam, model, lab, 3, backend="reference", sparse=True)
    assert torch.equal(b[g.long(), lbl.long()], mass)


@pytest.mark.parametrize("labels,match", [(torch.zeros(16, 21, dtype=torch.int64), "labels must be"),
                                          (torch.full((16, 20), 3, dtype=torch.int64), "label values must lie"),
                                          (torch.full((16, 20), -1, dtype=torch.int64), "label values must lie"),
                                          (torch.zeros(16, 20), "integers")])
def test_label_vote_rejects_bad_label_maps(labels: Tensor, match: str) -> None:
    from gaussian_renderer import vote_labels

    cam, model = make_scene(seed=1, n=10, width=20, height=16)
    with pytest.raises(ValueError, match=match):
        vote_labels(cam, model, labels, 2, backend="cpu")


def test_prepared_gaussians_give_the_same_votes() -> None:
    from gaussian_renderer import prepare_gaussians, vote_labels

    cam, model = make_scene(seed=43, n=300, width=40, height=30)
    w = torch.randn(cam.height, cam.width, 2, generator=torch.Generator().manual_seed(5))
    prepared = prepare_gaussians(model)
    assert torch.equal(vote(cam, prepared, w), vote(cam, model, w))
    half = prepare_gaussians(model, scaling_modifier=0.5)
    assert torch.equal(vote(cam, half, w), vote(cam, model, w, scaling_modifier=0.5))
    lab = _label_map(1, cam.height, cam.width, 2)
    assert torch.equal(vote_labels(cam, prepared, lab, 2), vote_labels(cam, model, lab, 2))
    with pytest.raises(ValueError, match="already prepared"):
        vote(cam, prepared, w, scaling_modifier=0.5)


@pytest.mark.parametrize("num_labels", [1, 70])
def test_vote_view_equals_the_onehot_passes_it_replaced(num_labels: int) -> None:
    """segmentation.voting.vote_view (label-map kernel, prepared Gaussians) against its previous implementation:
    utils.masks.onehot_weights voted in passes of 64 channels, float64."""
    from gaussian_renderer import prepare_gaussians
    from segmentation.voting import vote_view
    from utils.masks import onehot_weights

    cam, model = make_scene(seed=50 + num_labels, n=400, width=60, height=44)
    lab = _label_map(2, cam.height, cam.width, num_labels).numpy()
    w = torch.from_numpy(onehot_weights(lab, num_labels))
    old = torch.cat([vote(cam, model, w[:, :, a:a + 64].contiguous(), backend="cpu").double()
                     for a in range(0, num_labels + 1, 64)], 1)
    new = vote_view(cam, prepare_gaussians(model), lab, num_labels, backend="cpu")
    assert new.dtype == torch.float64 and torch.equal(new.view(torch.int64), old.view(torch.int64))
    with pytest.raises(ValueError, match="label values must lie"):
        vote_view(cam, model, lab + num_labels + 1, num_labels, backend="cpu")
